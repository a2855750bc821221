"""Building a topology: components, streams, subscriptions, and validation.

A topology file is a Python module that defines either a module-level
``topology`` (a :class:`Topology`) or a function ``build_topology(config)``
returning one. See ``docs/topologies.md``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .components import Bolt, Component, Spout, normalise_outputs
from .groupings import CustomGrouping, Grouping
from .wire.spec import (
    ComponentSpec,
    InputSpec,
    SpecError,
    TopologySpec,
    check_component_name,
    check_parallelism,
    check_topology_name,
)


class TopologyError(ValueError):
    """The topology is invalid; the message names the component and what is wrong."""


@dataclass(frozen=True)
class Subscription:
    source: str
    stream: str
    grouping: Grouping


@dataclass
class ComponentDef:
    """One declared component. ``factory()`` returns a fresh instance for a task."""

    name: str
    kind: str  # "spout" | "bolt" | "acker" (the system component added by with_ackers)
    cls: type
    factory: Callable[[], Component]
    parallelism: int
    tasks: int
    outputs: dict[str, tuple[str, ...]]
    config: dict[str, Any] = field(default_factory=dict)
    inputs: list[Subscription] = field(default_factory=list)

    def to_spec(self) -> ComponentSpec:
        inputs = tuple(InputSpec.from_dict({"source": s.source, "stream": s.stream, **s.grouping.to_spec()},
                                           self.name) for s in self.inputs)
        return ComponentSpec(self.kind, f"{self.cls.__module__}.{self.cls.__qualname__}", self.parallelism,
                             self.tasks, dict(self.outputs), inputs, dict(self.config))


# What Storm, pystorm and streamparse call a method StreamGale calls by another name: (the method a
# component of that kind may define instead, StreamGale's own, how to fix it).
STORM_NAMES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "bolt": (("execute", "process", "rename it process(self, tup)"),
             ("initialize", "prepare", "rename it prepare(self, context); the config is context.config"),
             ("declareOutputFields", "outputs", "declare the class attribute outputs = [\"field\", ...]"),
             ("declare_output_fields", "outputs", "declare the class attribute outputs = [\"field\", ...]")),
    "spout": (("nextTuple", "next_tuple", "rename it next_tuple(self)"),
              ("initialize", "open", "rename it open(self, context); the config is context.config"),
              ("declareOutputFields", "outputs", "declare the class attribute outputs = [\"field\", ...]"),
              ("declare_output_fields", "outputs", "declare the class attribute outputs = [\"field\", ...]")),
}


def storm_habit(kind: str, cls: type, base: type) -> str | None:
    """What is wrong when ``cls`` defines a method under its Storm name and not StreamGale's (pure)."""
    for storm, ours, fix in STORM_NAMES[kind]:
        if callable(getattr(cls, storm, None)) and getattr(cls, ours, None) is getattr(base, ours, None):
            return (f"{cls.__name__} defines {storm}(), Storm's name for it; StreamGale never calls it "
                    f"but {ours}: {fix}")
    return None


def _factory_for(name: str, component: Any, base: type) -> tuple[Any, Callable[[], Any]]:
    kind = "spout" if base is Spout else "bolt"
    cls = component if isinstance(component, type) else type(component)
    if isinstance(component, base) or (isinstance(component, type) and issubclass(component, base)):
        habit = storm_habit(kind, cls, base)
        if habit is not None:
            raise TopologyError(f"{kind} '{name}': {habit}")
    if isinstance(component, type):
        if not issubclass(component, base):
            raise TopologyError(
                f"{kind} '{name}': {component.__name__} must subclass streamgale.{base.__name__}"
            )
        return component, component
    if isinstance(component, base):
        proto = component
        return type(component), lambda: copy.deepcopy(proto)
    raise TopologyError(
        f"{kind} '{name}': expected a {base.__name__} subclass or instance, got {component!r}"
    )


class BoltDeclarer:
    """Returned by :meth:`Topology.bolt`; chain groupings to subscribe to streams."""

    def __init__(self, topology: Topology, component: ComponentDef):
        self._topology = topology
        self._component = component

    def _add(self, source: str, stream: str, grouping: Grouping) -> BoltDeclarer:
        if not isinstance(source, str):
            raise TopologyError(
                f"bolt '{self._component.name}': source must be a component name, got {source!r}"
            )
        self._component.inputs.append(Subscription(source, stream, grouping))
        return self

    def shuffle(self, source: str, stream: str = "default") -> BoltDeclarer:
        """Tuples are spread evenly over the tasks, at random."""
        return self._add(source, stream, Grouping("shuffle"))

    def fields(self, source: str, *fields: str, stream: str = "default") -> BoltDeclarer:
        """Tuples with equal values of ``fields`` always go to the same task."""
        if not fields:
            raise TopologyError(
                f"bolt '{self._component.name}': fields grouping on '{source}' needs at least one field"
            )
        return self._add(source, stream, Grouping("fields", tuple(fields)))

    def partial_key(self, source: str, *fields: str, stream: str = "default") -> BoltDeclarer:
        """Like fields grouping, but each key may go to one of two tasks, to balance skew."""
        if not fields:
            raise TopologyError(
                f"bolt '{self._component.name}': partial-key grouping on '{source}' needs a field"
            )
        return self._add(source, stream, Grouping("partial_key", tuple(fields)))

    def all(self, source: str, stream: str = "default") -> BoltDeclarer:
        """Every task receives every tuple."""
        return self._add(source, stream, Grouping("all"))

    def global_(self, source: str, stream: str = "default") -> BoltDeclarer:
        """Every tuple goes to one task (the lowest task id)."""
        return self._add(source, stream, Grouping("global"))

    def none(self, source: str, stream: str = "default") -> BoltDeclarer:
        """No preference (currently the same as shuffle)."""
        return self._add(source, stream, Grouping("none"))

    def direct(self, source: str, stream: str = "default") -> BoltDeclarer:
        """The emitter picks the task with ``emit_direct``."""
        return self._add(source, stream, Grouping("direct"))

    def local_or_shuffle(self, source: str, stream: str = "default") -> BoltDeclarer:
        """Shuffle among tasks in the emitter's worker if there are any, else among all."""
        return self._add(source, stream, Grouping("local_or_shuffle"))

    def custom(self, source: str, grouping: type[CustomGrouping] | CustomGrouping,
               stream: str = "default") -> BoltDeclarer:
        """A :class:`CustomGrouping` subclass or instance chooses the tasks."""
        is_cls = isinstance(grouping, type) and issubclass(grouping, CustomGrouping)
        if not (is_cls or isinstance(grouping, CustomGrouping)):
            raise TopologyError(
                f"bolt '{self._component.name}': custom grouping must be a CustomGrouping "
                f"subclass or instance, got {grouping!r}"
            )
        return self._add(source, stream, Grouping("custom", (), grouping))


class Topology:
    """A graph of spouts and bolts.

    ``config`` holds topology-level settings (``topology.workers``, user keys);
    each component may carry its own ``config`` (``topology.tick_interval``).
    """

    def __init__(self, name: str, config: Mapping[str, Any] | None = None):
        try:
            self.name = check_topology_name(name)
        except SpecError as e:
            raise TopologyError(str(e)) from None
        self.config: dict[str, Any] = dict(config or {})
        self.components: dict[str, ComponentDef] = {}
        # Where components find the files shipped beside the topology (a model bolt's model): the
        # topology file's directory when loaded from one, else the working directory.
        self.base_dir: str | None = None

    def _declare(self, name: str, component: Any, base: type, parallelism: int,
                 tasks: int | None, config: Mapping[str, Any] | None) -> ComponentDef:
        kind = "spout" if base is Spout else "bolt"
        try:
            check_component_name(kind, name)
            if name in self.components:
                raise SpecError(f"component name '{name}' is declared twice in topology '{self.name}'")
            parallelism, tasks = check_parallelism(kind, name, parallelism, parallelism if tasks is None else tasks)
        except SpecError as e:
            raise TopologyError(str(e)) from None
        cls, factory = _factory_for(name, component, base)
        outputs = normalise_outputs(cls.outputs if isinstance(component, type) else component.outputs, name)
        # A component may ask for config of its own (Storm's getComponentConfiguration), such as the
        # tick interval a WindowedBolt's windows need; what the topology passes takes precedence.
        asked = getattr(component, "component_config", None)
        own = {**(dict(asked()) if callable(asked) else {}), **dict(config or {})}
        cdef = ComponentDef(name, kind, cls, factory, parallelism, tasks, outputs, own)
        self.components[name] = cdef
        return cdef

    def spout(self, name: str, spout: type[Spout] | Spout, parallelism: int = 1,
              tasks: int | None = None, config: Mapping[str, Any] | None = None) -> ComponentDef:
        """Declare a spout with ``parallelism`` executors running ``tasks`` tasks."""
        return self._declare(name, spout, Spout, parallelism, tasks, config)

    def bolt(self, name: str, bolt: type[Bolt] | Bolt, parallelism: int = 1,
             tasks: int | None = None, config: Mapping[str, Any] | None = None) -> BoltDeclarer:
        """Declare a bolt; subscribe it to streams with the returned declarer."""
        return BoltDeclarer(self, self._declare(name, bolt, Bolt, parallelism, tasks, config))

    # -- validation -----------------------------------------------------------------------

    def validate(self) -> Topology:
        """Raise :class:`TopologyError` naming the first fault found; return self.

        The structural rules are :meth:`TopologySpec.validate`'s, the same nimbus applies.
        """
        from .config import Config, ConfigError

        try:
            Config().with_topology_config(self.config, f"config of topology '{self.name}'")
            for comp in self.components.values():
                Config().with_topology_config(comp.config, f"config of component '{comp.name}'")
        except ConfigError as e:
            raise TopologyError(str(e)) from None
        try:
            self.spec().validate()
        except SpecError as e:
            raise TopologyError(str(e)) from None
        return self

    # -- derived views --------------------------------------------------------------------

    def task_ids(self) -> dict[str, tuple[int, ...]]:
        """Task ids per component (see :func:`layout_tasks`).

        Fixed for the topology's life, so fields grouping keeps key -> task stable
        when executors change.
        """
        return layout_tasks({name: c.tasks for name, c in self.components.items()})

    def executors(self) -> dict[str, list[tuple[int, ...]]]:
        """Per component, its executors as groups of task ids (tasks split evenly)."""
        out = {}
        for name, tasks in self.task_ids().items():
            out[name] = split_evenly(tasks, self.components[name].parallelism)
        return out

    def spec(self) -> TopologySpec:
        """What this topology is, as the cluster stores it and the UI shows it."""
        return TopologySpec(self.name, dict(self.config), {n: c.to_spec() for n, c in self.components.items()})

    def subscribers(self) -> dict[tuple[str, str], list[tuple[str, Subscription]]]:
        """(source component, stream) -> [(subscribing component, subscription)]."""
        out: dict[tuple[str, str], list[tuple[str, Subscription]]] = {}
        for comp in self.components.values():
            for sub in comp.inputs:
                out.setdefault((sub.source, sub.stream), []).append((comp.name, sub))
        return out

    def with_ackers(self, count: int, message_timeout: float = 30.0) -> Topology:
        """A copy with ``count`` acker executors (system bolt ``__acker``); 0: none.

        As in Storm's system topology, every spout subscribes to the acker's
        ``__ack_result`` stream with direct grouping; the acker's tick interval
        is a quarter of ``message_timeout``, so it forgets expired roots in time.
        """
        from .runtime.acker import Acker
        from .runtime.acking import ACK_RESULT_STREAM, ACKER

        system = Subscription(ACKER, ACK_RESULT_STREAM, Grouping("direct"))
        clone = copy.copy(self)
        clone.components = {}
        for name, c in self.components.items():
            if name == ACKER:
                continue
            inputs = [s for s in c.inputs if s.source != ACKER]
            if count and c.kind == "spout":
                inputs.append(system)
            clone.components[name] = dataclasses.replace(c, inputs=inputs)
        if count:
            outputs = {stream: tuple(fields) for stream, fields in Acker.outputs.items()}  # a system stream
            clone.components[ACKER] = ComponentDef(ACKER, "acker", Acker, Acker, count, count, outputs,
                                                   {"topology.tick_interval": message_timeout / 4})
        return clone

    def stateful_components(self) -> list[str]:
        """Names of the bolts whose state is checkpointed (:class:`~streamgale.state.StatefulBolt`)."""
        from .state.bolt import StatefulBolt

        return [n for n, c in self.components.items() if c.kind == "bolt" and issubclass(c.cls, StatefulBolt)]

    def with_checkpointing(self, config: Mapping[str, Any]) -> Topology:
        """A copy with Storm's checkpointing if any bolt is stateful (else ``self``): the system
        spout ``__checkpoint``, a ``__checkpoint`` stream on every bolt, each bolt subscribed
        to it from the checkpoint spout (if it reads a spout) or from each bolt it reads, and
        every bolt wrapped to align and act on the barriers (docs/state.md).

        ``config`` is the topology's run config: checkpointing needs acking, and an interval
        below the message timeout; a :class:`TopologyError` says which setting to change.
        """
        from .runtime.acking import ACKER
        from .state.checkpoint import CHECKPOINT, CHECKPOINT_FIELDS, CheckpointedBolt, CheckpointSpout

        stateful = self.stateful_components()
        if not stateful or CHECKPOINT in self.components:
            return self
        names = ", ".join(f"'{n}'" for n in stateful)
        if acker_count(config) == 0:
            raise TopologyError(f"stateful bolts ({names}) need acking, but topology.acker_executors is 0; "
                                "remove that setting or set it to 1 or more")
        interval, timeout = config["topology.state.checkpoint_interval"], config["topology.message_timeout"]
        if interval >= timeout:
            raise TopologyError(
                f"topology.state.checkpoint_interval ({interval:g} s) must be below topology.message_timeout "
                f"({timeout:g} s): inputs wait for a checkpoint's commit to be acked; lower the interval or "
                "raise the timeout")
        checkpoint_timeout = config["topology.state.checkpoint_timeout"]
        if checkpoint_timeout is None:
            checkpoint_timeout = min(5.0, timeout / 4)
        elif checkpoint_timeout >= timeout:
            raise TopologyError(
                f"topology.state.checkpoint_timeout ({checkpoint_timeout:g} s) must be below "
                f"topology.message_timeout ({timeout:g} s): a lost COMMIT must be retried before the inputs it "
                "holds time out; lower it or raise the message timeout")
        clone = copy.copy(self)
        clone.components = {}
        for name, c in self.components.items():
            if c.kind != "bolt":
                clone.components[name] = c
                continue
            sources = []
            for sub in c.inputs:
                src = self.components.get(sub.source)
                if src is None or sub.source == ACKER:
                    continue
                source = CHECKPOINT if src.kind == "spout" else sub.source
                if source not in sources:
                    sources.append(source)
            marks = [Subscription(s, CHECKPOINT, Grouping("all")) for s in sources]
            factory = c.factory
            inputs = sum(1 if s == CHECKPOINT else self.components[s].tasks for s in sources)
            clone.components[name] = dataclasses.replace(
                c, factory=lambda f=factory, s=tuple(sources), n=inputs: CheckpointedBolt(f(), s, n),  # type: ignore[misc]
                outputs={**c.outputs, CHECKPOINT: CHECKPOINT_FIELDS}, inputs=[*c.inputs, *marks])
        # A checkpoint lost with a worker is retried after checkpoint_timeout, so a COMMIT reaches
        # a restarted task before the inputs it holds time out and are replayed.
        clone.components[CHECKPOINT] = ComponentDef(CHECKPOINT, "spout", CheckpointSpout, CheckpointSpout, 1, 1,
                                                    {CHECKPOINT: CHECKPOINT_FIELDS},
                                                    {"topology.message_timeout": checkpoint_timeout})
        return clone

    def acker_tasks(self) -> tuple[int, ...]:
        from .runtime.acking import ACKER

        return self.task_ids().get(ACKER, ())


def layout_tasks(tasks: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Task ids from component task counts: numbered from 1 in sorted name order,
    system components (``__acker``) last, so adding ackers moves no user task."""
    out: dict[str, tuple[int, ...]] = {}
    next_id = 1
    for name in sorted(tasks, key=lambda n: (n.startswith("__"), n)):
        out[name] = tuple(range(next_id, next_id + tasks[name]))
        next_id += tasks[name]
    return out


def acker_count(config: Mapping[str, Any]) -> int:
    """Acker executors for a topology: ``topology.acker_executors``, else one per worker."""
    n = config.get("topology.acker_executors")
    return int(config.get("topology.workers", 1)) if n is None else int(n)


def split_evenly(items: Sequence[int], parts: int) -> list[tuple[int, ...]]:
    """Split ``items`` into ``parts`` contiguous groups whose sizes differ by at most one."""
    n = len(items)
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(tuple(items[start:start + size]))
        start += size
    return out
