"""Executors: run the tasks of one component, and their output collectors.

An executor owns one or more tasks of one component (each task its own
component instance). Bolt tasks read from a per-task input deque; every emit is
routed by the task's routers (the same code in local mode and on a cluster) and
handed to a *sink* per target task: a local deque's ``append`` or a remote
batcher. Nothing here is thread-safe: one executor loop thread drives all
executors of a worker.
"""

from __future__ import annotations

import logging
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from streamgale.components import Bolt, Spout, TopologyContext
from streamgale.runtime.acking import ACK_INDEX, ACK_STREAM, AckBuffer, PendingRoots, new_id
from streamgale.runtime.routing import Router
from streamgale.tuples import DEFAULT_STREAM, TICK_STREAM, Tuple, tick_tuple

log = logging.getLogger("streamgale.executor")

Sink = Callable[[Tuple], None]
Capture = Callable[[str, int, str, Sequence[Any]], None]
# An executor's step returns after this many seconds of user code even if its budget is not
# spent, so one slow component cannot hold the loop (and what it drives) for long.
TURN_SECONDS = 0.05
# A spout task's turn ends once it has emitted this many tuples (whatever its call budget), so
# a turn's tuples and everything they fan out into are still in cache when the bolts take
# them. Measured on the cluster word count's spout (100 sentences a call, 1,000 words
# downstream): the same instructions ran 1.4x (unacked) to 1.8x (acked) faster per CPU second
# at 64 than at 1,024, where up to 11,000 words sat in the queues (docs/performance.md).
SPOUT_EMITS = 64
ErrorHandler = Callable[[str, int, BaseException, str], None]


class Routes:
    """For one emitting task: stream -> routers, plus the direct-stream targets."""

    def __init__(self, component: str, task: int, by_stream: dict[str, list[Router]],
                 direct: dict[str, frozenset[int]], index: dict[str, dict[str, int]],
                 sinks: dict[int, Sink]):
        self.component = component
        self.task = task
        self.by_stream = by_stream
        self.direct = direct
        self.index = index
        self.sinks = sinks

    def undeclared(self, stream: str) -> ValueError:
        declared = ", ".join(f"'{s}'" for s in self.index if not s.startswith("__")) or "none"
        return ValueError(
            f"component '{self.component}' emitted to stream '{stream}', which it does not "
            f"declare (declared: {declared}); add it to the component's outputs"
        )


class StreamCount:
    """Metrics of one output stream of a task: tuples emitted, and transferred (one per target)."""

    def __init__(self) -> None:
        self.emitted = 0
        self.transferred = 0


class FastRoute:
    """The hot path's table for a stream with at most one subscriber grouping: its router
    (None: nobody subscribes), field index and count, and its metrics counters."""

    def __init__(self, router: Router | None, fields: dict[str, int], count: StreamCount):
        self.router = router
        self.fields = fields
        self.n = len(fields)
        self.count = count


SETTLED = -1  # a tuple's edge once it is acked or failed: never an edge id (those are > 0)


class StartFailed(Exception):
    """A component's ``open`` or ``prepare`` raised ``error``: already reported as an error of the
    component (task and traceback); the worker (or local run) cannot go on. ``component``,
    ``task``: who; the message says what it raised."""

    def __init__(self, component: str, task: int, message: str, error: BaseException):
        super().__init__(message)
        self.component = component
        self.task = task
        self.error = error


class Collector:
    """The emit/ack surface of one task, installed on its component instance.

    With acking on (``acks`` is an :class:`AckBuffer`), a spout tuple emitted
    with a ``msg_id`` starts a tuple tree and bolt emits are anchored (see
    :mod:`streamgale.runtime.acking`); the buffered ack traffic goes out in
    :meth:`flush_acks`, once per executor step. With acking off a spout
    tuple's ``msg_id`` is acked as soon as it is emitted (Storm's behaviour
    with zero ackers).
    """

    def __init__(self, routes: Routes, capture: Capture | None,
                 acks: AckBuffer | None = None, clock: Callable[[], float] = time.monotonic):
        self._routes = routes
        self._component = routes.component
        self._task = routes.task
        self.emitted = 0
        self.current: Tuple | None = None  # the input being processed (auto-anchoring)
        self.auto_anchor = True
        # Told once per kind of misuse (kind, message): set by the executor to report it as an error
        self.misuse: Callable[[str, str], None] | None = None
        self.acked_now: list[Any] = []
        self.capture = capture
        self.acks = acks
        self.pending = PendingRoots()
        # Calls handed to this task's thread by other threads (call_soon_threadsafe), and the loop's
        # wakeup (installed by the loop) that ends its idle wait for them.
        self.deferred: deque[Callable[[], None]] = deque()
        self.waker: Any = None
        self.clock = clock
        self._sinks = routes.sinks
        # Metrics: stream -> tuples emitted and transferred; bolts: inputs executed, acked,
        # failed and seconds busy in process; spouts: trees acked, failed, and the sum of their
        # complete latencies.
        self.counts: dict[str, StreamCount] = {stream: StreamCount() for stream in routes.by_stream}
        self.executed = 0
        self.acked = 0
        self.failed = 0
        self.failed_early = 0  # spouts: trees failed at once because a worker of the topology was lost
        self.late_acks = 0  # spouts: trees that completed after they were failed (replayed: duplicates)
        self.settled_current = 0  # inputs failed inside process by an auto-ack bolt (so not acked)
        self.busy = 0.0
        self.latency_total = 0.0
        # Streams with at most one subscriber grouping take the hot path, unless emits are captured.
        self._fast: dict[str, FastRoute] = {}
        if capture is None:
            for stream, routers in routes.by_stream.items():
                if len(routers) <= 1:
                    self._fast[stream] = FastRoute(routers[0] if routers else None, routes.index[stream],
                                                   self.counts[stream])

    def _count(self, stream: str, targets: int) -> None:
        self.emitted += 1
        c = self.counts[stream]
        c.emitted += 1
        c.transferred += targets

    def _targets(self, values: Sequence[Any], stream: str) -> tuple[Sequence[int], dict[str, int]]:
        """Route one emit: (target tasks, field index); counts and captures it."""
        routers = self._routes.by_stream.get(stream)
        if routers is None:
            raise self._routes.undeclared(stream)
        fields = self._routes.index[stream]
        if isinstance(values, (str, bytes)) and len(values) != len(fields):
            raise TypeError(
                f"component '{self._component}' called emit({values!r}) with a string: emit takes a list of "
                f"values, one per field of stream '{stream}' {list(fields)}: emit([{values!r}])"
            )
        if len(values) != len(fields):
            raise ValueError(
                f"component '{self._component}' emitted {len(values)} values on stream "
                f"'{stream}', which declares {len(fields)} fields {list(fields)}"
            )
        if self.capture is not None:
            self.capture(self._component, self._task, stream, values)
        tasks: Sequence[int]
        if len(routers) == 1:
            tasks = routers[0].choose(values)
        else:
            many: list[int] = []
            for router in routers:
                many.extend(router.choose(values))
            tasks = many
        self._count(stream, len(tasks))
        return tasks, fields

    def _direct_target(self, target: int, values: Sequence[Any], stream: str) -> dict[str, int]:
        targets = self._routes.direct.get(stream)
        if targets is None or target not in targets:
            raise ValueError(
                f"component '{self._component}' emitted directly to task {target} on stream "
                f"'{stream}', but no bolt subscribed to that stream with direct grouping has "
                f"that task (direct targets: {sorted(targets or ())})"
            )
        self._count(stream, 1)
        if self.capture is not None:
            self.capture(self._component, self._task, stream, values)
        return self._routes.index[stream]

    def _deliver(self, tasks: Sequence[int], values: Sequence[Any], stream: str, fields: dict[str, int],
                 anchor_to: list[Tuple] | None) -> None:
        """Send to each task; with ``anchor_to`` (tracked inputs), each copy gets its own edge."""
        sinks, comp, task = self._sinks, self._component, self._task
        if anchor_to is None:
            for t in tasks:
                sinks[t](Tuple(values, stream, comp, task, fields, None))
            return
        if len(anchor_to) == 1:
            a = anchor_to[0]
            root = a.root
            if root:
                for t in tasks:
                    edge = new_id()
                    a.ack_val ^= edge
                    sinks[t](Tuple(values, stream, comp, task, fields, None, root, edge))
                return
            multi = a.multi
            assert multi is not None
            for t in tasks:
                edge = new_id()
                a.ack_val ^= edge
                sinks[t](Tuple(values, stream, comp, task, fields, dict.fromkeys(multi, edge)))
            return
        for t in tasks:
            # An edge per anchor: two anchors of one root (a join of a tree with
            # itself) must not cancel each other's edges out.
            anchors: dict[int, int] = {}
            for a in anchor_to:
                edge = new_id()
                a.ack_val ^= edge
                roots = a.anchors
                assert roots is not None
                for r in roots:
                    anchors[r] = anchors.get(r, 0) ^ edge
            sinks[t](Tuple(values, stream, comp, task, fields, anchors))

    # -- spout side -----------------------------------------------------------------------

    def _spout_send(self, tasks: Sequence[int], values: Sequence[Any], stream: str, fields: dict[str, int],
                    msg_id: Any) -> None:
        sinks, comp, task = self._sinks, self._component, self._task
        acks = self.acks
        if msg_id is None or acks is None or not tasks:
            for t in tasks:
                sinks[t](Tuple(values, stream, comp, task, fields, None))
            if msg_id is not None:
                self.acked_now.append(msg_id)  # untracked, or a tree with no edges: complete now
            return
        root = acks.new_root()
        xor = 0
        for t in tasks:
            edge = new_id()
            xor ^= edge
            sinks[t](Tuple(values, stream, comp, task, fields, None, root, edge))
        self.pending.add(root, msg_id, self.clock())
        acks.init(root, xor, task)

    def spout_emit(self, values: Sequence[Any], stream: str = DEFAULT_STREAM, msg_id: Any = None) -> Sequence[int]:
        tasks, fields = self._targets(values, stream)
        self._spout_send(tasks, values, stream, fields, msg_id)
        return tasks

    def spout_emit_many(self, values_list: Sequence[Sequence[Any]], stream: str = DEFAULT_STREAM,
                        msg_ids: Sequence[Any] | None = None) -> None:
        """Emit each values of ``values_list`` as its own tuple; ``msg_ids`` (parallel, or None)
        gives each its message id."""
        if msg_ids is not None and len(msg_ids) != len(values_list):
            raise ValueError(f"component '{self._component}' passed {len(msg_ids)} msg_ids for "
                             f"{len(values_list)} tuples to emit_many; give one per tuple, or none")
        for i in range(len(values_list)):
            values = values_list[i]
            tasks, fields = self._targets(values, stream)
            self._spout_send(tasks, values, stream, fields, None if msg_ids is None else msg_ids[i])

    def spout_emit_direct(self, task: int, values: Sequence[Any], stream: str = DEFAULT_STREAM,
                          msg_id: Any = None) -> None:
        fields = self._direct_target(task, values, stream)
        self._spout_send((task,), values, stream, fields, msg_id)

    # -- bolt side ------------------------------------------------------------------------

    def _anchor_to(self, anchors: Any) -> list[Tuple] | None:
        """The tracked input tuples an emit is anchored to."""
        if self.acks is None:
            return None
        if anchors is None:
            cur = self.current
            return [cur] if self.auto_anchor and cur is not None and cur.tracked else None
        if isinstance(anchors, Tuple):
            return [anchors] if anchors.tracked else None
        return [a for a in anchors if a.tracked] or None

    def bolt_emit(self, values: Sequence[Any], stream: str = DEFAULT_STREAM, anchors: Any = None) -> Sequence[int]:
        fast = self._fast.get(stream)
        if fast is None or len(values) != fast.n:
            return self._bolt_emit(values, stream, anchors)  # routes, checks, raises the full error
        # The hot path: one grouping (or none), anchored to the input being processed (auto-anchoring)
        # or to the one tuple given (a shell bolt's emits).
        if anchors is None:
            cur = self.current if self.auto_anchor else None
        elif type(anchors) is Tuple:
            cur = anchors
        else:
            return self._bolt_emit(values, stream, anchors)
        count = fast.count
        count.emitted += 1
        router = fast.router
        if router is None:
            return ()
        tasks = router.choose(values)
        count.transferred += len(tasks)
        sinks = self._sinks
        if cur is None or self.acks is None or not cur.tracked:
            for t in tasks:
                sinks[t](Tuple(values, stream, self._component, self._task, fast.fields, None))
            return tasks
        root = cur.root
        if not root:
            self._deliver(tasks, values, stream, fast.fields, [cur])
            return tasks
        # One root (the common case): a new edge per target, XORed into the input.
        for t in tasks:
            edge = new_id()
            cur.ack_val ^= edge
            sinks[t](Tuple(values, stream, self._component, self._task, fast.fields, None, root, edge))
        return tasks

    def _bolt_emit(self, values: Sequence[Any], stream: str, anchors: Any) -> Sequence[int]:
        tasks, fields = self._targets(values, stream)
        if tasks:
            self._deliver(tasks, values, stream, fields, self._anchor_to(anchors))
        return tasks

    def bolt_emit_many(self, values_list: Sequence[Sequence[Any]], stream: str = DEFAULT_STREAM,
                       anchors: Any = None) -> None:
        """Emit each values of ``values_list`` as its own tuple, each anchored as ``emit`` would."""
        anchor_to = self._anchor_to(anchors)
        for values in values_list:
            tasks, fields = self._targets(values, stream)
            if tasks:
                self._deliver(tasks, values, stream, fields, anchor_to)

    def bolt_emit_direct(self, task: int, values: Sequence[Any], stream: str = DEFAULT_STREAM,
                         anchors: Any = None) -> None:
        fields = self._direct_target(task, values, stream)
        self._deliver((task,), values, stream, fields, self._anchor_to(anchors))

    def ack(self, tup: Tuple) -> None:
        """``tup`` and everything emitted anchored to it so far is processed. A tuple is acked or
        failed once: a second call is ignored (a second XOR would undo the first and leave its tree
        to time out), and so is acking the input of an auto-ack bolt inside ``process``, which the
        runtime acks when ``process`` returns; each is reported once per component."""
        if tup.edge == SETTLED:
            self._twice(tup, "acked")
            return
        if self.auto_anchor and tup is self.current:
            if self.misuse is not None:
                self.misuse("auto-ack", (
                    f"bolt '{self._component}' calls self.ack() on its input, but it acks automatically "
                    "(auto_ack = True): every input is acked when process returns, so the call is ignored; "
                    "remove it, or set auto_ack = False to ack (and anchor) yourself"))
            return
        self.acked += 1
        acks = self.acks
        if acks is not None:
            if tup.root:
                acks.ack(tup.root, tup.edge ^ tup.ack_val)
            elif tup.multi is not None:
                val = tup.ack_val
                for root, edge in tup.multi.items():
                    acks.ack(root, edge ^ val)
        tup.edge = SETTLED

    def fail(self, tup: Tuple) -> None:
        """Fail every spout tuple ``tup`` descends from (the spouts may replay them). Failing the
        input of an auto-ack bolt inside ``process`` keeps the runtime from acking it; a tuple
        already acked or failed is left as it is (reported once per component)."""
        if tup.edge == SETTLED:
            self._twice(tup, "failed")
            return
        self.failed += 1
        if self.auto_anchor and tup is self.current:
            self.settled_current += 1  # not counted as acked when process returns
        acks = self.acks
        if acks is not None:
            if tup.root:
                acks.fail(tup.root)
            elif tup.multi is not None:
                for root in tup.multi:
                    acks.fail(root)
        tup.edge = SETTLED
        tup.root = 0
        tup.multi = None

    def _twice(self, tup: Tuple, what: str) -> None:
        if self.misuse is not None:
            self.misuse("twice", (
                f"bolt '{self._component}' task {self._task} {what} a tuple that was already acked or failed "
                f"(from '{tup.source}' on stream '{tup.stream}'); a tuple is acked or failed once, so the call is "
                "ignored (in an auto-ack bolt the runtime acks every input when process returns)"))

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the loop thread at its next turn (from any thread)."""
        self.deferred.append(fn)
        waker = self.waker
        if waker is not None:
            waker.set()

    def flush_acks(self) -> None:
        """Send the buffered ack traffic: one ``__ack`` tuple per acker task."""
        acks = self.acks
        if acks is None:
            return
        sinks, comp, task = self._sinks, self._component, self._task
        for acker, values in acks.drain():
            sinks[acker](Tuple(values, ACK_STREAM, comp, task, ACK_INDEX, None))


def _tick_dispatch(process: Callable[[Tuple], None], on_tick: Callable[[Tuple], None]) -> Callable[[Tuple], None]:
    """``process`` for a bolt with ``process_tick``: ticks go there, everything else to ``process``."""
    def dispatch(tup: Tuple) -> None:
        if tup.stream == TICK_STREAM:
            on_tick(tup)
        else:
            process(tup)
    return dispatch


class TaskRunner:
    """One task: its component instance, context and collector."""

    __slots__ = ("task", "instance", "context", "collector", "queue", "batch", "accepts", "on_tick")

    def __init__(self, task: int, instance: Any, context: TopologyContext, collector: Collector):
        self.task = task
        self.instance = instance
        self.context = context
        self.collector = collector
        self.queue: deque[Tuple] = deque()  # bolts: input tuples; spouts: ack results
        # A bolt may take its input a batch at a time (``process_batch(tuples)``, e.g. the acker).
        self.batch: Callable[[list[Tuple]], None] | None = (
            getattr(instance, "process_batch", None) if isinstance(instance, Bolt) else None)
        # A bolt may leave its input queued while it cannot take more (``accepts_input()`` is
        # false, e.g. a model bolt whose inference is behind): its queue fills, and the loop's
        # backpressure stops the spouts.
        self.accepts: Callable[[], bool] | None = (
            getattr(instance, "accepts_input", None) if isinstance(instance, Bolt) else None)
        # A bolt may take its ticks in ``process_tick(tup)`` (streamparse's name) instead of ``process``.
        self.on_tick: Callable[[Tuple], None] | None = (
            getattr(instance, "process_tick", None) if isinstance(instance, Bolt) else None)
        instance._collector = collector
        # Bind emit straight to the collector: one call less on the hot path.
        if isinstance(instance, Spout):
            instance.emit = collector.spout_emit  # type: ignore[method-assign]
            instance.emit_many = collector.spout_emit_many  # type: ignore[method-assign]
            instance.emit_direct = collector.spout_emit_direct  # type: ignore[method-assign]
        else:
            collector.auto_anchor = bool(instance.auto_ack)
            instance.emit = collector.bolt_emit
            instance.emit_many = collector.bolt_emit_many
            instance.emit_direct = collector.bolt_emit_direct


class Executor(ABC):
    """Common lifecycle: ``start`` (open/prepare), ``step`` (do a bounded amount
    of work, return how much), ``stop`` (close/cleanup)."""

    kind = ""
    tick_interval: float | None = None

    def __init__(self, component: str, runners: list[TaskRunner], on_error: ErrorHandler):
        self.component = component
        self.runners = runners
        self.on_error = on_error

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def step(self, budget: int) -> int: ...

    @abstractmethod
    def stop(self) -> None: ...

    def _report(self, runner: TaskRunner, exc: BaseException, doing: str) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.on_error(self.component, runner.task, exc, f"{doing}\n{tb}")

    def _start_failed(self, r: TaskRunner, exc: BaseException, method: str, kind: str) -> StartFailed:
        """Report what ``method`` raised as the component's error; the StartFailed to raise."""
        doing = f"in {method} of {kind} '{self.component}' task {r.task}"
        self._report(r, exc, doing)
        return StartFailed(self.component, r.task, f"{kind} '{self.component}' task {r.task} could not start: "
                                                    f"{method}() raised {type(exc).__name__}: {exc}", exc)

    def tasks(self) -> list[int]:
        return [r.task for r in self.runners]

    def _run_deferred(self, r: TaskRunner) -> int:
        """Run the calls other threads handed to this task (``call_soon_threadsafe``)."""
        col = r.collector
        q = col.deferred
        n = 0
        started = perf_counter()
        while q:
            fn = q.popleft()
            n += 1
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - user code
                self._report(r, exc, f"in a call handed to {self.kind} '{self.component}' task {r.task} "
                                     f"by another thread ({getattr(fn, '__qualname__', fn)!r})")
        col.busy += perf_counter() - started
        if col.acks is not None and col.acks.dirty:
            col.flush_acks()
        return n

    def _install_reporter(self, r: TaskRunner) -> None:
        hook = getattr(r.instance, "error_reporter", None)
        if hook is not None:  # a component that reports errors it handles itself (a model or shell bolt)
            hook(self._reporter(r))

    def _reporter(self, r: TaskRunner) -> Callable[[BaseException, str], None]:
        def report(exc: BaseException, doing: str) -> None:
            self._report(r, exc, doing)
        return report


class SpoutExecutor(Executor):
    """Spout tasks: ack results and timeouts first, then ``next_tuple`` while
    the task has fewer than ``max_pending`` tuple trees in flight."""

    kind = "spout"

    def __init__(self, component: str, runners: list[TaskRunner], on_error: ErrorHandler,
                 message_timeout: float = 30.0, max_pending: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(component, runners, on_error)
        self.active = True
        # The last step called a task's next_tuple and it emitted nothing (a paced spout, or one
        # polling an empty source): the loop calls it again soon rather than waiting.
        self.asked_empty = False
        self.message_timeout = message_timeout
        self.max_pending = max_pending
        self.clock = clock

    def start(self) -> None:
        for r in self.runners:
            self._install_reporter(r)
            try:
                r.instance.open(r.context)
            except Exception as exc:  # noqa: BLE001 - user code
                raise self._start_failed(r, exc, "open", "spout") from exc

    def settle(self) -> int:
        """Deliver ack results, timeouts and calls handed over by other threads to the spouts
        (also while they are throttled)."""
        work = 0
        for r in self.runners:
            if r.collector.deferred:
                work += self._run_deferred(r)
            if r.queue:
                work += self._results(r)
            if r.collector.pending:
                self._expire(r)
        return work

    def step(self, budget: int) -> int:
        """Call next_tuple up to ``budget`` times per task, while it has fewer than
        ``max_pending`` trees in flight, emits something each call and has emitted fewer
        than ``SPOUT_EMITS`` tuples this turn."""
        self.asked_empty = False
        if not self.active:
            return 0
        work = 0
        limit = self.max_pending
        for r in self.runners:
            col = r.collector
            spout = r.instance
            pending = col.pending
            deadline = perf_counter() + TURN_SECONDS
            start = col.emitted
            for i in range(budget):
                if limit is not None and len(pending) >= limit:
                    break
                if col.emitted - start >= SPOUT_EMITS:
                    break  # the bolts get to work before queues grow further
                if i & 7 == 7 and perf_counter() > deadline:
                    break  # a slow spout: the loop must get round to the bolts and the transport
                before = col.emitted
                try:
                    spout.next_tuple()
                except Exception as exc:  # noqa: BLE001 - user code
                    self._report(r, exc, f"in next_tuple of spout '{self.component}' task {r.task}")
                    break
                if col.acked_now:
                    self._ack_untracked(r)
                if col.emitted == before:
                    self.asked_empty = True
                    break
                work += col.emitted - before
            if col.acks is not None and col.acks.dirty:
                col.flush_acks()
        return work

    def _results(self, r: TaskRunner) -> int:
        """Ack results from ackers: call the spout's ack/fail for the trees still pending."""
        col = r.collector
        q, pending, spout = r.queue, col.pending, r.instance
        # A spout that keeps Spout's ack (it does nothing) is not called per acked tree.
        ack = None if getattr(type(spout), "ack", None) is Spout.ack and "ack" not in getattr(spout, "__dict__", ()) \
            else spout.ack
        now = self.clock()
        n = 0
        while q:
            tup = q.popleft()
            try:
                acked, failed = tup.values
                for root in acked:
                    entry = pending.pop(root)
                    if entry is not None:
                        n += 1
                        col.acked += 1
                        col.latency_total += now - entry[1]
                        if ack is not None:
                            self._call(r, ack, entry[0], "ack")
                    else:
                        col.late_acks += 1
                for root in failed:
                    entry = pending.pop(root)
                    if entry is not None:
                        n += 1
                        col.failed += 1
                        self._call(r, spout.fail, entry[0], "fail")
            except (TypeError, ValueError) as exc:
                log.warning("spout '%s' task %d dropped a malformed ack result: %s", self.component, r.task, exc)
        return n

    def fail_pending(self) -> int:
        """Fail every tree in flight now (a worker of the topology was lost, so any of them may
        have died with it): the spouts replay them at once instead of after the message
        timeout; trees that complete after all count as ``late_acks``. Returns how many."""
        now = self.clock()
        n = 0
        for r in self.runners:
            col = r.collector
            for msg_id, _ in col.pending.expired(now, 0.0):
                n += 1
                col.failed += 1
                col.failed_early += 1
                self._call(r, r.instance.fail, msg_id, "fail")
        return n

    def _expire(self, r: TaskRunner) -> None:
        for msg_id, _ in r.collector.pending.expired(self.clock(), self.message_timeout):
            r.collector.failed += 1
            self._call(r, r.instance.fail, msg_id, "fail")

    def _call(self, r: TaskRunner, method: Callable[[Any], None], msg_id: Any, name: str) -> None:
        try:
            method(msg_id)
        except Exception as exc:  # noqa: BLE001 - user code
            self._report(r, exc, f"in {name} of spout '{self.component}' task {r.task}")

    def _ack_untracked(self, r: TaskRunner) -> None:
        ids, r.collector.acked_now = r.collector.acked_now, []
        r.collector.acked += len(ids)
        for msg_id in ids:
            self._call(r, r.instance.ack, msg_id, "ack")

    def set_active(self, active: bool) -> None:
        if active == self.active:
            return
        self.active = active
        for r in self.runners:
            try:
                r.instance.activate() if active else r.instance.deactivate()
            except Exception as exc:  # noqa: BLE001
                self._report(r, exc, f"in {'activate' if active else 'deactivate'} of spout "
                                     f"'{self.component}' task {r.task}")

    def stop(self) -> None:
        for r in self.runners:
            try:
                r.instance.close()
            except Exception as exc:  # noqa: BLE001
                self._report(r, exc, f"in close of spout '{self.component}' task {r.task}")


class BoltExecutor(Executor):
    kind = "bolt"

    def __init__(self, component: str, runners: list[TaskRunner], on_error: ErrorHandler,
                 tick_interval: float | None, kind: str = "bolt", queue_size: int = 0,
                 misuses: set[str] | None = None):
        super().__init__(component, runners, on_error)
        self.tick_interval = tick_interval
        self.kind = kind  # the component's declared kind: "bolt", or "acker" for the system bolt
        # Backpressure between bolts: while one of these local input queues (of the bolts it
        # feeds) holds queue_size tuples, this bolt waits, so a fan-out cannot flood them.
        self.outputs: list[deque[Tuple]] = []
        self.queue_size = queue_size
        # kinds of collector misuse reported: once each per component (a set its executors share)
        self.misuses: set[str] = set() if misuses is None else misuses

    def blocked(self) -> bool:
        limit = self.queue_size
        if limit:
            for q in self.outputs:
                if len(q) >= limit:
                    return True
        return False

    def start(self) -> None:
        for r in self.runners:
            self._install_reporter(r)
            r.collector.misuse = self._misused(r)
            try:
                r.instance.prepare(r.context)
            except Exception as exc:  # noqa: BLE001 - user code
                raise self._start_failed(r, exc, "prepare", "bolt") from exc

    def _misused(self, r: TaskRunner) -> Callable[[str, str], None]:
        """Report a misuse of the collector (a double ack) once per kind for the component here."""
        def misuse(kind: str, message: str) -> None:
            if kind not in self.misuses:
                self.misuses.add(kind)
                self.on_error(self.component, r.task, UserWarning(message), message)
        return misuse

    def tick(self) -> None:
        for r in self.runners:
            r.queue.append(tick_tuple(self.tick_interval or 0.0))

    def step(self, budget: int) -> int:
        """Process up to ``budget`` queued tuples per task.

        Auto-ack bolts have each input acked when ``process`` returns; any bolt
        whose ``process`` raises has that input failed (and the error reported).
        Nothing is processed while a bolt it feeds has a full queue.
        """
        work = 0
        if self.outputs and self.blocked():
            return 0
        for r in self.runners:
            if r.collector.deferred:
                work += self._run_deferred(r)
            q = r.queue
            n = len(q)
            if not n:
                continue
            if r.accepts is not None and not self._accepts(r):
                continue
            if n > budget:
                n = budget
            if r.batch is not None:
                work += self._step_batch(r, n)
                continue
            process = r.instance.process
            if r.on_tick is not None:
                process = _tick_dispatch(process, r.on_tick)
            pop = q.popleft
            col = r.collector
            acks = col.acks if col.auto_anchor else None
            # Consecutive inputs of one tree (a split's words reach a count task together) are
            # acked as one entry: their XORs merged here, one append for the run.
            run_root = 0
            run_xor = 0
            started = perf_counter()
            deadline = started + TURN_SECONDS
            done = 0
            for _ in range(n):
                if done & 15 == 15 and perf_counter() > deadline:
                    break  # a slow bolt: the rest waits for the next turn
                done += 1
                tup = pop()
                col.current = tup
                try:
                    process(tup)
                except Exception as exc:  # noqa: BLE001 - user code
                    if tup.edge != SETTLED:
                        col.fail(tup)  # counted in settled_current when the bolt auto-acks
                    self._report(r, exc, f"in process of bolt '{self.component}' task {r.task} "
                                         f"on {tup!r}")
                    continue
                if acks is not None:
                    root = tup.root
                    if root:
                        if root == run_root:
                            run_xor ^= tup.edge ^ tup.ack_val
                        else:
                            if run_root:
                                acks.ack(run_root, run_xor)
                            run_root = root
                            run_xor = tup.edge ^ tup.ack_val
                    elif tup.multi is not None:
                        val = tup.ack_val
                        for tree, edge in tup.multi.items():
                            acks.ack(tree, edge ^ val)
                    tup.edge = SETTLED  # a later ack or fail of it is ignored, not a second XOR
            if run_root and acks is not None:
                acks.ack(run_root, run_xor)
            col.busy += perf_counter() - started
            col.current = None
            col.executed += done
            if col.auto_anchor:
                col.acked += done - col.settled_current
                col.settled_current = 0
            if col.acks is not None and col.acks.dirty:
                col.flush_acks()
            work += done
        return work

    def _accepts(self, r: TaskRunner) -> bool:
        accepts = r.accepts
        assert accepts is not None
        try:
            return bool(accepts())
        except Exception as exc:  # noqa: BLE001 - user code
            self._report(r, exc, f"in accepts_input of bolt '{self.component}' task {r.task}")
            return True

    def _step_batch(self, r: TaskRunner, n: int) -> int:
        """``process_batch`` with up to ``n`` queued tuples: auto-ack bolts have every input acked
        when it returns; if it raises, every input of the batch is failed."""
        q, col, batch = r.queue, r.collector, r.batch
        assert batch is not None
        tuples = [q.popleft() for _ in range(n)]
        started = perf_counter()
        try:
            batch(tuples)
        except Exception as exc:  # noqa: BLE001 - user code
            for tup in tuples:
                col.fail(tup)
            self._report(r, exc, f"in process_batch of bolt '{self.component}' task {r.task} on {n} tuples")
        else:
            if col.auto_anchor:
                for tup in tuples:
                    col.ack(tup)
        col.busy += perf_counter() - started
        col.executed += n
        if col.acks is not None and col.acks.dirty:
            col.flush_acks()
        return n

    def stop(self) -> None:
        for r in self.runners:
            try:
                r.instance.cleanup()
            except Exception as exc:  # noqa: BLE001
                self._report(r, exc, f"in cleanup of bolt '{self.component}' task {r.task}")
