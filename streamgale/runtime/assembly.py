"""Build the executors a worker runs: instances, contexts, routes, sinks.

Pure wiring with no I/O: given the topology, its config, which executors run
here and how to reach a task that runs elsewhere, return ready executors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from streamgale.components import TopologyContext
from streamgale.config import Config
from streamgale.runtime.acker import Acker
from streamgale.runtime.acking import ACK_INDEX, ACK_STREAM, ACKER, AckBuffer
from streamgale.runtime.routing import DirectRouter, make_router
from streamgale.topology import Topology, TopologyError

from .executor import BoltExecutor, Capture, Collector, ErrorHandler, Executor, Routes, Sink, SpoutExecutor, TaskRunner


def component_config(topology: Topology, config: Config, component: str) -> Config:
    """The topology config with the component's own config layered on top."""
    comp = topology.components[component]
    if not comp.config:
        return config
    return config.with_topology_config(comp.config, f"config of component '{component}'")


def stream_index(topology: Topology) -> dict[str, dict[str, dict[str, int]]]:
    """component -> stream -> field name -> position: its declared streams, and ``__ack``,
    which every task may send (the acker declares its ``__ack_result`` like any output)."""
    index: dict[str, dict[str, dict[str, int]]] = {}
    for name, comp in topology.components.items():
        streams = {stream: {f: i for i, f in enumerate(fields)} for stream, fields in comp.outputs.items()}
        streams[ACK_STREAM] = ACK_INDEX
        index[name] = streams
    return index


def blocking_targets(topology: Topology, task_ids: dict[str, tuple[int, ...]]) -> dict[str, list[int]]:
    """Component -> the tasks whose full queues stop its bolt executors (Storm's backpressure
    between bolts): those of the user bolts subscribed to its streams. None for a bolt on a
    cycle of subscriptions (it could wait on itself), and never the acker or spouts (ack
    traffic always flows)."""
    downstream: dict[str, set[str]] = {}
    for (source, _stream), subs in topology.subscribers().items():
        for target, _sub in subs:
            if target != ACKER and topology.components[target].kind == "bolt":
                downstream.setdefault(source, set()).add(target)

    def on_cycle(component: str) -> bool:
        seen: set[str] = set()
        frontier = list(downstream.get(component, ()))
        while frontier:
            c = frontier.pop()
            if c == component:
                return True
            if c not in seen:
                seen.add(c)
                frontier.extend(downstream.get(c, ()))
        return False

    return {component: [] if on_cycle(component) else [t for c in sorted(targets) for t in task_ids[c]]
            for component, targets in downstream.items()}


def task_context(topology: Topology, conf: Config, component: str, task: int,
                 task_ids: dict[str, tuple[int, ...]], outputs: dict[str, tuple[str, ...]],
                 base_dir: str) -> TopologyContext:
    sources = {(s.source, s.stream): tuple(topology.components[s.source].outputs[s.stream])
               for s in topology.components[component].inputs
               if not s.stream.startswith("__") and s.stream in topology.components[s.source].outputs}
    groupings = {(s.source, s.stream, target): s.grouping.to_spec()
                 for target, comp in topology.components.items() for s in comp.inputs
                 if not s.stream.startswith("__") and component in (s.source, target)}
    return TopologyContext(topology=topology.name, component=component, task_id=task,
                           task_index=task_ids[component].index(task), task_count=len(task_ids[component]),
                           config=conf, component_tasks=task_ids, outputs=outputs, base_dir=base_dir,
                           sources=sources, groupings=groupings)


def check_before_submit(topology: Topology, config: Config, base_dir: str) -> None:
    """Let every component that can check itself against what it will run with (a model bolt:
    its model file, and its feeds and outputs against the model) do so, with the context of its
    first task, before anything is uploaded; raises :class:`TopologyError` with its message."""
    task_ids = topology.task_ids()
    for name, comp in topology.components.items():
        if not hasattr(comp.cls, "check_before_submit") or not task_ids[name]:
            continue
        check = getattr(comp.factory(), "check_before_submit")  # noqa: B009 - not on every Component
        outputs = {s: tuple(f) for s, f in comp.outputs.items()}
        context = task_context(topology, component_config(topology, config, name), name, task_ids[name][0],
                               task_ids, outputs, base_dir)
        try:
            check(context)
        except Exception as e:  # noqa: BLE001 - the component's own check: its message is the error
            raise TopologyError(str(e)) from e


def build_executors(
    topology: Topology,
    config: Config,
    local: Iterable[tuple[str, tuple[int, ...]]],
    remote_sink: Callable[[int], Sink] | None,
    on_error: ErrorHandler,
    capture: Capture | None = None,
    sinks: dict[int, Sink] | None = None,
    clock: Callable[[], float] = time.monotonic,
    colocated: frozenset[int] | None = None,
) -> list[Executor]:
    """Executors for the (component, task ids) groups in ``local``.

    ``remote_sink(task)`` returns the sink for a task that is not local (bolts,
    ackers, and spouts, which receive ack results). With an ``__acker``
    component in ``topology`` (see :meth:`Topology.with_ackers`), spout tuples
    emitted with a message id are tracked.
    ``sinks`` (task -> sink), if given, is filled in and shared by every
    emitting task, so a worker can re-point a moved task by replacing its entry.
    ``clock`` (monotonic seconds) is what message timeouts are measured by: the
    spouts' and the ackers' (tests inject a simulated one; the loop takes the same).
    ``colocated``: every task of the worker when ``local`` adds executors to a running one (what
    local-or-shuffle groupings and the co-located acker prefer); default the tasks in ``local``.
    """
    task_ids = topology.task_ids()
    task_component = {t: c for c, ts in task_ids.items() for t in ts}
    local = list(local)
    local_tasks = frozenset(t for _, ts in local for t in ts) if colocated is None else colocated
    subscribers = topology.subscribers()

    runners: dict[int, TaskRunner] = {}
    base_dir = topology.base_dir or os.getcwd()
    if sinks is None:
        sinks = {}
    index = stream_index(topology)
    ackers = topology.acker_tasks()
    outputs = {name: {s: tuple(f) for s, f in c.outputs.items()} for name, c in topology.components.items()}

    for component, tasks in local:
        comp = topology.components[component]
        conf = component_config(topology, config, component)
        for task in tasks:
            context = task_context(topology, conf, component, task, task_ids, outputs[component], base_dir)
            routes = Routes(component, task, {}, {}, index[component], sinks)
            for stream, fields in comp.outputs.items():
                routers = []
                for target, sub in subscribers.get((component, stream), []):
                    router = make_router(sub.grouping, task_ids[target], fields, task, local_tasks,
                                         context, stream, target)
                    if isinstance(router, DirectRouter):
                        routes.direct[stream] = routes.direct.get(stream, frozenset()) | router.targets
                    else:
                        routers.append(router)
                routes.by_stream[stream] = routers
            acks = AckBuffer(ackers, local_tasks) if ackers else None
            instance = Acker(clock) if comp.kind == "acker" else comp.factory()
            runners[task] = TaskRunner(task, instance, context, Collector(routes, capture, acks, clock))

    executors: list[Executor] = []
    misuses: dict[str, set[str]] = {}  # component -> kinds of collector misuse reported (once each)
    for component, tasks in local:
        comp = topology.components[component]
        group = [runners[t] for t in tasks]
        conf = component_config(topology, config, component)
        if comp.kind == "spout":
            pending = conf["topology.max_spout_pending"] if ackers else None
            executors.append(SpoutExecutor(component, group, on_error, conf["topology.message_timeout"], pending,
                                           clock))
        else:
            executors.append(BoltExecutor(component, group, on_error, conf["topology.tick_interval"], comp.kind,
                                          queue_size=conf["topology.queue_size"],
                                          misuses=misuses.setdefault(component, set())))

    for e in executors:
        for r in e.runners:
            sinks[r.task] = r.queue.append
    wire_backpressure(topology, executors)
    if remote_sink is not None:
        for task in task_component:
            if task not in local_tasks:
                sinks[task] = remote_sink(task)
    return executors


def wire_backpressure(topology: Topology, executors: list[Executor]) -> None:
    """Point each bolt executor at the queues of the local tasks whose fullness stops it
    (:func:`blocking_targets`); again after a worker's executors change."""
    queues = {r.task: r.queue for e in executors for r in e.runners}
    blocking = blocking_targets(topology, topology.task_ids())
    for e in executors:
        if isinstance(e, BoltExecutor):
            e.outputs = [queues[t] for t in blocking.get(e.component, ()) if t in queues]
