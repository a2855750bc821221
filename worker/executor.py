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
import traceback
from collections import deque
from typing import Any, Callable, Sequence

from streamgale.components import Bolt, Spout, TopologyContext
from streamgale.tuples import DEFAULT_STREAM, Tuple, tick_tuple

log = logging.getLogger("streamgale.executor")

Sink = Callable[[Tuple], None]
ErrorHandler = Callable[[str, int, BaseException, str], None]


class Routes:
    """For one emitting task: stream -> routers, plus the direct-stream targets."""

    __slots__ = ("component", "task", "by_stream", "direct", "index", "sinks")

    def __init__(self, component: str, task: int, by_stream: dict[str, list[Any]],
                 direct: dict[str, frozenset[int]], index: dict[str, dict[str, int]],
                 sinks: dict[int, Sink]):
        self.component = component
        self.task = task
        self.by_stream = by_stream
        self.direct = direct
        self.index = index
        self.sinks = sinks

    def undeclared(self, stream: str) -> ValueError:
        declared = ", ".join(f"'{s}'" for s in self.index) or "none"
        return ValueError(
            f"component '{self.component}' emitted to stream '{stream}', which it does not "
            f"declare (declared: {declared}); add it to the component's outputs"
        )


class Collector:
    """The emit/ack surface of one task, installed on its component instance.

    Emits are tagged with ``anchors`` for the tuple-tree tracker; with acking
    off a spout tuple's ``msg_id`` is acked as soon as it is emitted (Storm's
    behaviour with zero ackers).
    """

    __slots__ = ("_routes", "_component", "_task", "emitted", "current", "_spout", "acked_now",
                 "capture")

    def __init__(self, routes: Routes, capture: Callable[[str, int, str, Sequence[Any]], None] | None):
        self._routes = routes
        self._component = routes.component
        self._task = routes.task
        self.emitted = 0
        self.current: Tuple | None = None
        self.acked_now: list[Any] = []
        self.capture = capture

    def _send(self, values: Sequence[Any], stream: str, anchors: Any) -> tuple[int, ...]:
        routers = self._routes.by_stream.get(stream)
        if routers is None:
            raise self._routes.undeclared(stream)
        fields = self._routes.index[stream]
        if len(values) != len(fields):
            raise ValueError(
                f"component '{self._component}' emitted {len(values)} values on stream "
                f"'{stream}', which declares {len(fields)} fields {list(fields)}"
            )
        self.emitted += 1
        if self.capture is not None:
            self.capture(self._component, self._task, stream, values)
        sinks = self._routes.sinks
        comp, task = self._component, self._task
        if len(routers) == 1:
            tasks = routers[0].choose(values)
            for t in tasks:
                sinks[t](Tuple(values, stream, comp, task, fields, anchors))
            return tasks
        out: list[int] = []
        for router in routers:
            for t in router.choose(values):
                sinks[t](Tuple(values, stream, comp, task, fields, anchors))
                out.append(t)
        return tuple(out)

    def _send_direct(self, target: int, values: Sequence[Any], stream: str, anchors: Any) -> None:
        targets = self._routes.direct.get(stream)
        if targets is None or target not in targets:
            raise ValueError(
                f"component '{self._component}' emitted directly to task {target} on stream "
                f"'{stream}', but no bolt subscribed to that stream with direct grouping has "
                f"that task (direct targets: {sorted(targets or ())})"
            )
        fields = self._routes.index[stream]
        self.emitted += 1
        if self.capture is not None:
            self.capture(self._component, self._task, stream, values)
        self._routes.sinks[target](Tuple(values, stream, self._component, self._task, fields, anchors))

    # -- spout side -----------------------------------------------------------------------

    def spout_emit(self, values: Sequence[Any], stream: str = DEFAULT_STREAM, msg_id: Any = None):
        tasks = self._send(values, stream, None)
        if msg_id is not None:
            self.acked_now.append(msg_id)
        return tasks

    def spout_emit_direct(self, task: int, values: Sequence[Any], stream: str = DEFAULT_STREAM,
                          msg_id: Any = None) -> None:
        self._send_direct(task, values, stream, None)
        if msg_id is not None:
            self.acked_now.append(msg_id)

    # -- bolt side ------------------------------------------------------------------------

    def bolt_emit(self, values: Sequence[Any], stream: str = DEFAULT_STREAM, anchors: Any = None):
        return self._send(values, stream, None)

    def bolt_emit_direct(self, task: int, values: Sequence[Any], stream: str = DEFAULT_STREAM,
                         anchors: Any = None) -> None:
        self._send_direct(task, values, stream, None)

    def ack(self, tup: Tuple) -> None:
        """Tuple-tree tracking is not wired yet; acks of untracked tuples are no-ops."""

    def fail(self, tup: Tuple) -> None:
        """See :meth:`ack`."""


class TaskRunner:
    """One task: its component instance, context and collector."""

    __slots__ = ("task", "instance", "context", "collector", "queue")

    def __init__(self, task: int, instance: Spout | Bolt, context: TopologyContext, collector: Collector):
        self.task = task
        self.instance = instance
        self.context = context
        self.collector = collector
        self.queue: deque[Tuple] = deque()
        instance._collector = collector
        # Bind emit straight to the collector: one call less on the hot path.
        if isinstance(instance, Spout):
            instance.emit = collector.spout_emit  # type: ignore[method-assign]
            instance.emit_direct = collector.spout_emit_direct  # type: ignore[method-assign]
        else:
            instance.emit = collector.bolt_emit  # type: ignore[method-assign]
            instance.emit_direct = collector.bolt_emit_direct  # type: ignore[method-assign]


class Executor:
    """Common lifecycle: ``start`` (open/prepare), ``step`` (do a bounded amount
    of work, return how much), ``stop`` (close/cleanup)."""

    kind = ""

    def __init__(self, component: str, runners: list[TaskRunner], on_error: ErrorHandler):
        self.component = component
        self.runners = runners
        self.on_error = on_error

    def _report(self, runner: TaskRunner, exc: BaseException, doing: str) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.on_error(self.component, runner.task, exc, f"{doing}\n{tb}")

    def tasks(self) -> list[int]:
        return [r.task for r in self.runners]


class SpoutExecutor(Executor):
    kind = "spout"

    def __init__(self, component: str, runners: list[TaskRunner], on_error: ErrorHandler):
        super().__init__(component, runners, on_error)
        self.active = True

    def start(self) -> None:
        for r in self.runners:
            r.instance.open(r.context)

    def step(self, budget: int) -> int:
        """Call next_tuple on each task until it emits nothing or ``budget`` calls."""
        if not self.active:
            return 0
        work = 0
        for r in self.runners:
            spout, col = r.instance, r.collector
            for _ in range(budget):
                before = col.emitted
                try:
                    spout.next_tuple()
                except Exception as exc:  # noqa: BLE001 - user code
                    self._report(r, exc, f"in next_tuple of spout '{self.component}' task {r.task}")
                    break
                if col.acked_now:
                    self._ack_untracked(r)
                if col.emitted == before:
                    break
                work += col.emitted - before
        return work

    def _ack_untracked(self, r: TaskRunner) -> None:
        ids, r.collector.acked_now = r.collector.acked_now, []
        for msg_id in ids:
            try:
                r.instance.ack(msg_id)
            except Exception as exc:  # noqa: BLE001
                self._report(r, exc, f"in ack of spout '{self.component}' task {r.task}")

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
                 tick_interval: float | None):
        super().__init__(component, runners, on_error)
        self.tick_interval = tick_interval

    def start(self) -> None:
        for r in self.runners:
            r.instance.prepare(r.context)

    def pending(self) -> int:
        return sum(len(r.queue) for r in self.runners)

    def tick(self) -> None:
        for r in self.runners:
            r.queue.append(tick_tuple())

    def step(self, budget: int) -> int:
        """Process up to ``budget`` queued tuples per task."""
        work = 0
        for r in self.runners:
            q = r.queue
            n = len(q)
            if not n:
                continue
            if n > budget:
                n = budget
            process = r.instance.process
            pop = q.popleft
            col = r.collector
            for _ in range(n):
                tup = pop()
                col.current = tup
                try:
                    process(tup)
                except Exception as exc:  # noqa: BLE001 - user code
                    self._report(r, exc, f"in process of bolt '{self.component}' task {r.task} "
                                         f"on {tup!r}")
            col.current = None
            work += n
        return work

    def stop(self) -> None:
        for r in self.runners:
            try:
                r.instance.cleanup()
            except Exception as exc:  # noqa: BLE001
                self._report(r, exc, f"in cleanup of bolt '{self.component}' task {r.task}")
