"""Testing topologies: run one to completion on fixed data and inspect every emit.

Like Storm's ``completeTopology``::

    from streamgale.testing import complete_topology

    result = complete_topology(topology, mock_sources={"sentences": [["a b"], ["b"]]})
    assert sorted(result.emitted("count")) == [["a", 1], ["b", 1], ["b", 2]]

The topology runs in local mode (the same routing and executors as a
cluster). It is complete when every spout is exhausted and no tuple is queued.

With ``advance=seconds`` (or a :class:`SimulatedClock`) the run is in simulated
time: tick tuples and message timeouts come when the clock says, not the wall
clock, so a tick-driven bolt is tested exactly::

    result = complete_topology(topology, mock_sources={...}, advance=30)  # 10 s ticks: three each

For calling a bolt's methods directly, :func:`prepare_bolt` records what it
emits, and :func:`make_tuple` and :func:`tick_tuple` make its input.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .components import Bolt, Spout, TopologyContext
from .config import Config
from .local import ComponentError, LocalCluster
from .runtime.assembly import component_config, task_context
from .runtime.executor import StartFailed
from .topology import Topology, TopologyError
from .tuples import DEFAULT_STREAM, Tuple
from .tuples import tick_tuple as _tick_tuple

__all__ = [
    "BoltOutput",
    "CapturingBolt",
    "CompletedTopology",
    "FixedTupleSpout",
    "SimulatedClock",
    "TopologyRunError",
    "captured",
    "complete_topology",
    "make_tuple",
    "prepare_bolt",
    "tick_tuple",
]

# A tick due this close after the end of a simulated run still comes: advancing by N
# intervals gives N ticks although N additions of the interval may round past N times it.
_ROUNDING = 1e-9


class FixedTupleSpout(Spout):
    """Emits a fixed list of tuples once, then nothing.

    ``tuples`` are value lists for ``stream``. With several tasks, task *i*
    emits every *n*-th tuple starting at *i*, so the whole list is emitted once.
    Each tuple is emitted with its position as message id; ``acked`` and
    ``failed`` record what came back.
    """

    def __init__(self, tuples: Iterable[Sequence[Any]],
                 outputs: Sequence[str] | Mapping[str, Sequence[str]] = ("value",),
                 stream: str = "default"):
        self.tuples = [list(t) for t in tuples]
        self.outputs = outputs  # type: ignore[misc]
        self.stream = stream
        self.acked: list[Any] = []
        self.failed: list[Any] = []

    def open(self, context: TopologyContext) -> None:
        self._todo = list(range(context.task_index, len(self.tuples), context.task_count))
        self._todo.reverse()

    def next_tuple(self) -> None:
        if self._todo:
            i = self._todo.pop()
            self.emit(self.tuples[i], stream=self.stream, msg_id=i)

    def ack(self, msg_id: Any) -> None:
        self.acked.append(msg_id)

    def fail(self, msg_id: Any) -> None:
        self.failed.append(msg_id)

    def exhausted(self) -> bool:
        return not self._todo


_CAPTURED: dict[str, list[Tuple]] = defaultdict(list)
_CAPTURED_LOCK = threading.Lock()


class CapturingBolt(Bolt):
    """Records every tuple it receives under ``name``; read them with :func:`captured`.

    For local mode and :func:`complete_topology` (same process).
    """

    def __init__(self, name: str):
        self.name = name

    def process(self, tup: Tuple) -> None:
        with _CAPTURED_LOCK:
            _CAPTURED[self.name].append(tup)



def _copier(proto: Any) -> Callable[[], Any]:
    return lambda: copy.deepcopy(proto)

def captured(name: str, clear: bool = False) -> list[Tuple]:
    """Tuples recorded so far by CapturingBolts named ``name``."""
    with _CAPTURED_LOCK:
        out = list(_CAPTURED.get(name, ()))
        if clear:
            _CAPTURED.pop(name, None)
    return out


class TopologyRunError(RuntimeError):
    """Components raised while the topology ran; ``errors`` holds each one."""

    def __init__(self, errors: list[ComponentError]):
        self.errors = errors
        first = errors[0]
        super().__init__(
            f"{len(errors)} error(s) raised by components; first: component "
            f"'{first.component}' task {first.task}: {type(first.error).__name__}: {first.error}\n"
            f"{first.details}"
        )


class SimulatedClock:
    """Monotonic seconds that pass only when told to: the time of a simulated run.

    Call it to read the time. :func:`complete_topology` moves it while the topology runs
    (components may read it then, e.g. in a windowed bolt's ``now``, but must not move it);
    a unit test calling a component itself moves it with :meth:`advance`. A component
    holding it keeps the one clock when it is copied for each task. Not thread-safe: one
    thread reads and moves it, the one running the topology or the test.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the time ``seconds`` (>= 0) forward."""
        if not seconds >= 0:
            raise ValueError(f"a simulated clock only moves forward: advance({seconds!r}) needs seconds >= 0")
        self._now += seconds

    def _move_to(self, when: float) -> None:
        self._now = when

    def __deepcopy__(self, memo: dict[int, Any]) -> SimulatedClock:
        return self  # the tasks' copies of a component share the time

    def __repr__(self) -> str:
        return f"SimulatedClock({self._now!r})"


class _SimulatedSchedule:
    """Where a simulated run moves its clock whenever nothing more happens at the present
    instant (pure: no clock of its own, no I/O).

    It mirrors the executor loop's tick timers: the loop fires a timer at its first turn
    with ``now >= due`` and makes it due again at ``now + interval``. Moved exactly to each
    due time, the clock never lets a timer fire late or two ticks merge; after the last
    tick due by ``end``, the clock moves to ``end``.
    """

    def __init__(self, intervals: Iterable[float], start: float, end: float):
        self.timers = [[start + interval, interval] for interval in intervals]  # [due, interval]
        self.end = end
        self.slack = _ROUNDING * max(1.0, abs(end))

    def next_instant(self, now: float) -> float | None:
        """The instant to move to from ``now`` (the timers due then count as fired), or None
        when the run is over."""
        due = min((timer[0] for timer in self.timers), default=None)
        if due is not None and due <= self.end + self.slack:
            for timer in self.timers:
                if due >= timer[0]:
                    timer[0] = due + timer[1]
            return due
        return self.end if now < self.end else None


@dataclass
class CompletedTopology:
    """What every component emitted, per stream, in emit order, and what each spout was
    told of its messages."""

    _emitted: dict[tuple[str, str], list[list[Any]]]
    _by_task: dict[tuple[str, str], list[tuple[int, list[Any]]]]
    errors: list[ComponentError] = field(default_factory=list)
    seconds: float = 0.0
    _acked: dict[str, list[Any]] = field(default_factory=dict)
    _failed: dict[str, list[Any]] = field(default_factory=dict)

    def emitted(self, component: str, stream: str = "default") -> list[list[Any]]:
        """Value lists ``component`` emitted on ``stream`` (empty if none)."""
        return [list(v) for v in self._emitted.get((component, stream), [])]

    def emitted_by_task(self, component: str, stream: str = "default") -> list[tuple[int, list[Any]]]:
        """(task id, values) pairs, for checking which task emitted what."""
        return [(t, list(v)) for t, v in self._by_task.get((component, stream), [])]

    def streams(self) -> list[tuple[str, str]]:
        return sorted(self._emitted)

    def acked(self, spout: str) -> list[Any]:
        """Message ids whose tuple trees were fully processed: each ``ack`` call the tasks of
        ``spout`` had, in call order (a message id acked twice, after a replay, is here twice)."""
        return list(self._spout_calls(self._acked, spout))

    def failed(self, spout: str) -> list[Any]:
        """Message ids whose trees failed (a bolt failed or raised on a tuple of the tree, or
        ``topology.message_timeout`` passed): each ``fail`` call of ``spout``'s tasks, in order."""
        return list(self._spout_calls(self._failed, spout))

    def _spout_calls(self, calls: dict[str, list[Any]], spout: str) -> list[Any]:
        if spout not in calls:
            raise ValueError(f"'{spout}' is not a spout of the topology (its spouts: {', '.join(sorted(calls))})")
        return calls[spout]


def _with_mocks(topology: Topology, mock_sources: Mapping[str, Iterable[Sequence[Any]]]) -> Topology:
    clone = copy.copy(topology)
    clone.components = dict(topology.components)
    for name, data in mock_sources.items():
        comp = topology.components.get(name)
        if comp is None or comp.kind != "spout":
            spouts = [n for n, c in topology.components.items() if c.kind == "spout"]
            raise TopologyError(f"mock source '{name}' is not a spout of '{topology.name}' (spouts: {spouts})")
        if len(comp.outputs) != 1:
            raise TopologyError(
                f"mock source '{name}' declares {len(comp.outputs)} streams; mock data needs exactly one"
            )
        (stream, fields), = comp.outputs.items()
        proto = FixedTupleSpout(data, {stream: list(fields)}, stream)
        clone.components[name] = copy.copy(comp)
        clone.components[name].cls = FixedTupleSpout
        clone.components[name].factory = _copier(proto)
    return clone


def _record_spout_calls(cluster: LocalCluster) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Record every ack and fail call each spout task gets, per component, in call order,
    before the spout's own method runs (the executors call them through the instance)."""
    acked: dict[str, list[Any]] = {}
    failed: dict[str, list[Any]] = {}
    for e in cluster.loop.spouts:
        for r in e.runners:
            spout = r.instance
            spout.ack = _recording(spout.ack, acked.setdefault(e.component, []))
            spout.fail = _recording(spout.fail, failed.setdefault(e.component, []))
    return acked, failed


def _recording(method: Callable[[Any], None], calls: list[Any]) -> Callable[[Any], None]:
    def record(msg_id: Any) -> None:
        calls.append(msg_id)
        method(msg_id)
    return record


def _clock_mover(clock: SimulatedClock, tick_intervals: list[float], advance: float) -> Callable[[], bool]:
    """For a simulated run from now to ``advance`` seconds on: a function that, called when
    nothing more happens at the present instant, moves ``clock`` to the next one, or returns
    False when the run is over."""
    schedule = _SimulatedSchedule(tick_intervals, clock(), clock() + advance)

    def move_on() -> bool:
        when = schedule.next_instant(clock())
        if when is None:
            return False
        clock._move_to(when)
        return True
    return move_on


def complete_topology(
    topology: Topology,
    mock_sources: Mapping[str, Iterable[Sequence[Any]]] | None = None,
    config: Mapping[str, Any] | Config | None = None,
    timeout: float = 60.0,
    raise_errors: bool = True,
    clock: SimulatedClock | None = None,
    advance: float | None = None,
) -> CompletedTopology:
    """Run ``topology`` until its spouts are exhausted and every queue is empty.

    ``mock_sources`` replaces named spouts with :class:`FixedTupleSpout` over
    the given value lists. Every spout left must have an ``exhausted()``
    method. Raises :class:`TopologyRunError` if a component raised (unless
    ``raise_errors`` is false) and ``TimeoutError`` after ``timeout`` (real)
    seconds. Blocks; runs the topology on the calling thread.

    Given ``advance`` (seconds >= 0) or a ``clock``, the run is in simulated
    time, read from ``clock`` (a new one at 0 if none is given), which times the
    tick tuples (``topology.tick_interval``, for the topology or a bolt) and the
    message timeouts. In this order:

    1. The clock stands still while the spouts emit everything and all of it
       is processed, acks included.
    2. The clock moves to the next instant a tick is due, no further than
       ``advance`` seconds from the start; each bolt due gets one tick per task,
       and everything those ticks cause is processed. Repeated: advancing by N
       tick intervals gives each task of the bolt exactly N ticks.
    3. The clock moves to the start plus ``advance``, and what comes due by
       then runs.

    Message timeouts are checked at every instant: a tree still pending fails
    at the first instant it is ``topology.message_timeout`` old (the ackers
    tick at a quarter of the timeout, so instants come at least that often).
    The spouts are called at every instant, so a spout that replays a failed
    message is exhausted again before the clock moves on.
    """
    if advance is not None and not advance >= 0:
        raise ValueError(f"complete_topology: advance={advance!r} must be a number of seconds >= 0")
    run_topology = _with_mocks(topology, mock_sources or {})
    base = config if isinstance(config, Config) else Config().merged(dict(config or {}), "test config")
    base = base.with_topology_config(topology.config)
    emitted: dict[tuple[str, str], list[list[Any]]] = defaultdict(list)
    by_task: dict[tuple[str, str], list[tuple[int, list[Any]]]] = defaultdict(list)

    def capture(component: str, task: int, stream: str, values: Sequence[Any]) -> None:
        emitted[(component, stream)].append(values)  # type: ignore[arg-type]
        by_task[(component, stream)].append((task, values))  # type: ignore[arg-type]

    if clock is None and advance is not None:
        clock = SimulatedClock()
    cluster = LocalCluster(run_topology, base, capture=capture, clock=time.monotonic if clock is None else clock)
    spouts = [r.instance for e in cluster.loop.spouts for r in e.runners]
    for s in spouts:
        if not callable(getattr(s, "exhausted", None)):
            raise TypeError(
                f"spout {type(s).__name__} has no exhausted() method; give it mock data with "
                "mock_sources={name: [...]} or add exhausted() returning True when done"
            )
    acked, failed = _record_spout_calls(cluster)
    move_on = None if clock is None else _clock_mover(
        clock, [b.tick_interval for b in cluster.loop.bolts if b.tick_interval], advance or 0.0)
    deadline = time.monotonic() + timeout
    timed_out = False

    def done() -> bool:
        nonlocal timed_out
        if all(s.exhausted() for s in spouts) and cluster.loop.idle():
            return move_on is None or not move_on()  # simulated time: complete at the last instant
        if time.monotonic() > deadline:
            timed_out = True
            return True
        return False

    try:
        run = cluster.run(until=done)
    except StartFailed as e:  # a component's open or prepare raised: its error, like any other
        if raise_errors:
            raise TopologyRunError(cluster.errors) from e.error
        return CompletedTopology(dict(emitted), dict(by_task), list(cluster.errors), 0.0, acked, failed)
    if raise_errors and run.errors:
        raise TopologyRunError(run.errors)
    if timed_out:
        raise TimeoutError(f"topology '{topology.name}' did not complete within {timeout} s")
    return CompletedTopology(dict(emitted), dict(by_task), run.errors, run.seconds, acked, failed)


# -- calling a bolt directly ----------------------------------------------------------------------


def tick_tuple(interval: float = 0.0) -> Tuple:
    """A tick tuple as the runtime delivers one (``is_tick`` true, from ``__system``), for
    calling a bolt's ``process`` directly."""
    return _tick_tuple(interval)


def make_tuple(values: Sequence[Any], fields: Sequence[str], stream: str = DEFAULT_STREAM,
               source: str = "source", source_task: int = 1) -> Tuple:
    """An input tuple for calling a bolt's ``process`` directly: ``values`` named ``fields``,
    on ``stream`` of ``source``'s task ``source_task``. Untracked (no spout awaits its ack)."""
    if len(values) != len(fields):
        raise ValueError(f"make_tuple: {len(values)} values for {len(fields)} fields {list(fields)}")
    return Tuple(list(values), stream, source, source_task, {f: i for i, f in enumerate(fields)})


@dataclass
class BoltOutput:
    """What a bolt prepared by :func:`prepare_bolt` did, in call order: its emits as (stream,
    values), and the tuples it acked or failed itself (the runtime's automatic acks of an
    ``auto_ack`` bolt are not made here)."""

    emits: list[tuple[str, list[Any]]] = field(default_factory=list)
    acked: list[Tuple] = field(default_factory=list)
    failed: list[Tuple] = field(default_factory=list)

    def emitted(self, stream: str = DEFAULT_STREAM) -> list[list[Any]]:
        """Value lists emitted on ``stream``, in emit order."""
        return [list(values) for s, values in self.emits if s == stream]


class _RecordingCollector:
    """Stands in for the runtime's collector of a bolt that a test calls itself: checks each
    emit against the bolt's declared streams, as the runtime does, and records it."""

    def __init__(self, component: str, outputs: Mapping[str, Sequence[str]], output: BoltOutput):
        self._component = component
        self._outputs = outputs
        self._output = output

    def bolt_emit(self, values: Sequence[Any], stream: str = DEFAULT_STREAM, anchors: Any = None) -> Sequence[int]:
        fields = self._outputs.get(stream)
        if fields is None:
            declared = ", ".join(f"'{s}'" for s in self._outputs) or "none"
            raise ValueError(f"component '{self._component}' emitted to stream '{stream}', which it does not "
                             f"declare (declared: {declared}); add it to the component's outputs")
        if len(values) != len(fields):
            raise ValueError(f"component '{self._component}' emitted {len(values)} values on stream '{stream}', "
                             f"which declares {len(fields)} fields {list(fields)}")
        self._output.emits.append((stream, list(values)))
        return ()

    def bolt_emit_many(self, values_list: Sequence[Sequence[Any]], stream: str = DEFAULT_STREAM,
                       anchors: Any = None) -> None:
        for values in values_list:
            self.bolt_emit(values, stream, anchors)

    def bolt_emit_direct(self, task: int, values: Sequence[Any], stream: str = DEFAULT_STREAM,
                         anchors: Any = None) -> None:
        self.bolt_emit(values, stream, anchors)

    def ack(self, tup: Tuple) -> None:
        self._output.acked.append(tup)

    def fail(self, tup: Tuple) -> None:
        self._output.failed.append(tup)


def prepare_bolt(bolt: Bolt, config: Mapping[str, Any] | None = None) -> BoltOutput:
    """Prepare ``bolt`` for a unit test that calls its ``process`` itself, as the only task of
    component ``'bolt'`` (its own ``component_config()`` and ``config`` over the defaults);
    returns where its emits, acks and fails are recorded. Emits are checked against the
    streams it declares. No runtime runs: no ticks come but those the test passes
    (:func:`tick_tuple`), and nothing is routed."""
    topology = Topology("unit-test")
    topology.bolt("bolt", bolt, config=config)
    outputs = topology.components["bolt"].outputs
    context = task_context(topology, component_config(topology, Config(), "bolt"), "bolt", 1,
                           topology.task_ids(), outputs, os.getcwd())
    output = BoltOutput()
    bolt._collector = _RecordingCollector("bolt", outputs, output)
    bolt.prepare(context)
    return output
