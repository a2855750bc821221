"""Testing topologies: run one to completion on fixed data and inspect every emit.

Like Storm's ``completeTopology``::

    from streamgale.testing import complete_topology

    result = complete_topology(topology, mock_sources={"sentences": [["a b"], ["b"]]})
    assert sorted(result.emitted("count")) == [["a", 1], ["b", 1], ["b", 2]]

The topology runs in local mode (the same routing and executors as a
cluster). It is complete when every spout is exhausted and no tuple is queued.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .components import Bolt, Spout, TopologyContext
from .config import Config
from .local import ComponentError, LocalCluster
from .topology import Topology, TopologyError
from .tuples import Tuple

__all__ = [
    "CapturingBolt",
    "CompletedTopology",
    "FixedTupleSpout",
    "TopologyRunError",
    "captured",
    "complete_topology",
]


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


@dataclass
class CompletedTopology:
    """What every component emitted, per stream, in emit order."""

    _emitted: dict[tuple[str, str], list[list[Any]]]
    _by_task: dict[tuple[str, str], list[tuple[int, list[Any]]]]
    errors: list[ComponentError] = field(default_factory=list)
    seconds: float = 0.0

    def emitted(self, component: str, stream: str = "default") -> list[list[Any]]:
        """Value lists ``component`` emitted on ``stream`` (empty if none)."""
        return [list(v) for v in self._emitted.get((component, stream), [])]

    def emitted_by_task(self, component: str, stream: str = "default") -> list[tuple[int, list[Any]]]:
        """(task id, values) pairs, for checking which task emitted what."""
        return [(t, list(v)) for t, v in self._by_task.get((component, stream), [])]

    def streams(self) -> list[tuple[str, str]]:
        return sorted(self._emitted)


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


def complete_topology(
    topology: Topology,
    mock_sources: Mapping[str, Iterable[Sequence[Any]]] | None = None,
    config: Mapping[str, Any] | Config | None = None,
    timeout: float = 60.0,
    raise_errors: bool = True,
) -> CompletedTopology:
    """Run ``topology`` until its spouts are exhausted and every queue is empty.

    ``mock_sources`` replaces named spouts with :class:`FixedTupleSpout` over
    the given value lists. Every spout left must have an ``exhausted()``
    method. Raises :class:`TopologyRunError` if a component raised (unless
    ``raise_errors`` is false) and ``TimeoutError`` after ``timeout`` seconds.
    """
    run_topology = _with_mocks(topology, mock_sources or {})
    base = config if isinstance(config, Config) else Config().merged(dict(config or {}), "test config")
    base = base.merged(topology.config, "topology config")
    emitted: dict[tuple[str, str], list[list[Any]]] = defaultdict(list)
    by_task: dict[tuple[str, str], list[tuple[int, list[Any]]]] = defaultdict(list)

    def capture(component: str, task: int, stream: str, values: Sequence[Any]) -> None:
        emitted[(component, stream)].append(values)  # type: ignore[arg-type]
        by_task[(component, stream)].append((task, values))  # type: ignore[arg-type]

    cluster = LocalCluster(run_topology, base, capture=capture)
    spouts = [r.instance for e in cluster.loop.spouts for r in e.runners]
    for s in spouts:
        if not callable(getattr(s, "exhausted", None)):
            raise TypeError(
                f"spout {type(s).__name__} has no exhausted() method; give it mock data with "
                "mock_sources={name: [...]} or add exhausted() returning True when done"
            )
    deadline = time.monotonic() + timeout
    timed_out = False

    def done() -> bool:
        nonlocal timed_out
        if all(s.exhausted() for s in spouts) and cluster.loop.idle():
            return True
        if time.monotonic() > deadline:
            timed_out = True
            return True
        return False

    run = cluster.run(until=done)
    if raise_errors and run.errors:
        raise TopologyRunError(run.errors)
    if timed_out:
        raise TimeoutError(f"topology '{topology.name}' did not complete within {timeout} s")
    return CompletedTopology(dict(emitted), dict(by_task), run.errors, run.seconds)
