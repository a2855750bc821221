"""The topology spec: what a topology is, as it travels from client to nimbus, workers and the UI.

A :class:`TopologySpec` is a frozen record made by
:meth:`streamgale.Topology.spec`, sent in ``submit``, stored in each
:class:`~streamgale.cluster.records.TopologyRecord`, and shown by the UI. Its
wire form (:meth:`TopologySpec.to_dict`, a msgpack/JSON map) is::

    {"name": str, "config": {...},
     "components": {name: {"kind": "spout" | "bolt" | "acker", "class": "module.Class",
                           "parallelism": int, "tasks": int, "outputs": {stream: [field, ...]},
                           "inputs": [{"source", "stream", "type", "fields"?, "class"?}, ...],
                           "config": {...}}}}

:meth:`TopologySpec.from_dict` checks the shape; :meth:`TopologySpec.validate`
checks the rules a runnable topology obeys. Both the builder
(:meth:`streamgale.Topology.validate`) and nimbus (on ``submit``) use these
same rules, so a client and the cluster never disagree about what is valid.
Errors are :class:`SpecError` and name the thing at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streamgale.groupings import KINDS
from streamgale.runtime.acking import ACK_RESULT_STREAM, ACKER

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MAX_COMPONENTS = 1000
MAX_TASKS = 100_000
CHECKPOINT = "__checkpoint"  # the system spout (and stream) of checkpointed state: Topology.with_checkpointing
COMPONENT_KINDS = ("spout", "bolt", "acker")  # "acker": the system bolt added by Topology.with_ackers


class SpecError(ValueError):
    """A topology spec is malformed or breaks a rule; the message names the fault."""


# -- rules shared with the builder's declare-time checks -----------------------------------------

def check_topology_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError(f"topology name {name!r} is invalid: use 1-64 letters, digits, '_' or '-', "
                        "starting with a letter")
    return name


def check_component_name(kind: str, name: Any) -> str:
    if (name, kind) in ((ACKER, "acker"), (CHECKPOINT, "spout")):
        return name
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError(f"{kind} name {name!r} is invalid: use 1-64 letters, digits, '_' or '-', "
                        "starting with a letter")
    return name


def check_parallelism(kind: str, name: str, parallelism: Any, tasks: Any) -> tuple[int, int]:
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
        raise SpecError(f"{kind} '{name}': parallelism must be an integer >= 1, got {parallelism!r}")
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < parallelism:
        raise SpecError(f"{kind} '{name}': tasks must be an integer >= parallelism ({parallelism}), got {tasks!r}")
    return parallelism, tasks


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise SpecError(f"{what} must be a list of strings, got {value!r}"[:200])
    return tuple(value)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise SpecError(f"{what} must be a mapping with string keys, got {type(value).__name__}")
    return dict(value)


# -- the records ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputSpec:
    """A subscription: ``stream`` of ``source``, grouped by ``grouping`` (one of the grouping kinds)."""

    source: str
    stream: str
    grouping: str
    fields: tuple[str, ...] = ()
    custom: str | None = None  # module.Class of a custom grouping

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "stream": self.stream, "type": self.grouping}
        if self.fields:
            out["fields"] = list(self.fields)
        if self.custom is not None:
            out["class"] = self.custom
        return out

    @classmethod
    def from_dict(cls, d: Any, component: str) -> InputSpec:
        if not isinstance(d, Mapping):
            raise SpecError(f"an input of '{component}' is not a mapping")
        source, stream, grouping = d.get("source"), d.get("stream", "default"), d.get("type")
        for what, value in (("source", source), ("stream", stream), ("type", grouping)):
            if not isinstance(value, str):
                raise SpecError(f"an input of '{component}' has no valid '{what}' (a string), got {value!r}")
        custom = d.get("class")
        if custom is not None and not isinstance(custom, str):
            raise SpecError(f"an input of '{component}' has a 'class' that is not a string")
        return cls(str(source), str(stream), str(grouping),
                   _strings(d.get("fields", []), f"fields of an input of '{component}'"), custom)


@dataclass(frozen=True)
class ComponentSpec:
    kind: str
    cls: str  # module.Class
    parallelism: int
    tasks: int
    outputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    inputs: tuple[InputSpec, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "class": self.cls, "parallelism": self.parallelism, "tasks": self.tasks,
                "outputs": {s: list(f) for s, f in self.outputs.items()},
                "inputs": [i.to_dict() for i in self.inputs], "config": dict(self.config)}

    @classmethod
    def from_dict(cls, d: Any, name: str) -> ComponentSpec:
        if not isinstance(d, Mapping):
            raise SpecError(f"component '{name}' must be a mapping")
        kind = d.get("kind")
        if kind not in COMPONENT_KINDS:
            raise SpecError(f"component '{name}' must have kind 'spout' or 'bolt', got {kind!r}")
        outputs = {s: _strings(f, f"fields of stream '{s}' of '{name}'")
                   for s, f in _mapping(d.get("outputs", {}), f"outputs of '{name}'").items()}
        inputs = d.get("inputs", [])
        if not isinstance(inputs, list):
            raise SpecError(f"inputs of '{name}' must be a list")
        return cls(kind, str(d.get("class", "")), d.get("parallelism"), d.get("tasks"),  # type: ignore[arg-type]
                   outputs, tuple(InputSpec.from_dict(i, name) for i in inputs),
                   _mapping(d.get("config", {}), f"config of '{name}'"))


@dataclass(frozen=True)
class TopologySpec:
    name: str
    config: dict[str, Any]
    components: dict[str, ComponentSpec]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": dict(self.config),
                "components": {n: c.to_dict() for n, c in self.components.items()}}

    @classmethod
    def from_dict(cls, d: Any) -> TopologySpec:
        """The record for a wire map; raises :class:`SpecError` when its shape is wrong."""
        if isinstance(d, TopologySpec):
            return d
        if not isinstance(d, Mapping):
            raise SpecError(f"a topology spec must be a mapping, got {type(d).__name__}")
        components = _mapping(d.get("components"), "the spec's 'components'") if "components" in d else None
        if components is None:
            raise SpecError("a topology spec must have a 'components' mapping")
        name = d.get("name", "")
        if not isinstance(name, str):
            raise SpecError(f"the spec's 'name' must be a string, got {name!r}")
        return cls(name, _mapping(d.get("config", {}), "the spec's 'config'"),
                   {n: ComponentSpec.from_dict(c, n) for n, c in components.items()})

    def named(self, name: str) -> TopologySpec:
        return replace(self, name=name)

    def validate(self) -> TopologySpec:
        """Raise :class:`SpecError` naming the first rule broken; return self."""
        check_topology_name(self.name)
        if not any(c.kind == "spout" for c in self.components.values()):
            raise SpecError(f"topology '{self.name}' has no spout")
        if len(self.components) > MAX_COMPONENTS:
            raise SpecError(f"a topology may have at most {MAX_COMPONENTS} components, got {len(self.components)}")
        total = 0
        for name, comp in self.components.items():
            check_component_name(comp.kind, name)
            if (comp.kind == "acker") != (name == ACKER):
                raise SpecError(f"only the system component '{ACKER}' has kind 'acker' (got '{name}', {comp.kind})")
            check_parallelism(comp.kind, name, comp.parallelism, comp.tasks)
            total += comp.tasks
        if total > MAX_TASKS:
            raise SpecError(f"a topology may have at most {MAX_TASKS} tasks, got {total}")
        for name, comp in self.components.items():
            self._validate_inputs(name, comp)
        return self

    def _validate_inputs(self, name: str, comp: ComponentSpec) -> None:
        seen: set[tuple[str, str]] = set()
        for sub in comp.inputs:
            system = (sub.source, sub.stream, sub.grouping) == (ACKER, ACK_RESULT_STREAM, "direct")
            if comp.kind == "spout" and not system:
                raise SpecError(f"spout '{name}' cannot subscribe to streams")
            if comp.kind == "acker":
                raise SpecError(f"system component '{ACKER}' has no inputs")
            source = self.components.get(sub.source)
            if source is None or (sub.source == ACKER and not system):
                known = ", ".join(f"'{n}'" for n in self.components if n != ACKER) or "none"
                raise SpecError(f"bolt '{name}' subscribes to unknown component '{sub.source}' (components: {known})")
            if sub.stream not in source.outputs:
                declared = ", ".join(f"'{s}'" for s in source.outputs) or "no stream"
                raise SpecError(f"component '{name}' subscribes to stream '{sub.stream}' of '{sub.source}', "
                                f"which declares only {declared}")
            if sub.grouping not in KINDS:
                raise SpecError(f"bolt '{name}' uses unknown grouping '{sub.grouping}' (known: {', '.join(KINDS)})")
            fields = source.outputs[sub.stream]
            for f in sub.fields:
                if f not in fields:
                    raise SpecError(f"bolt '{name}' groups stream '{sub.stream}' of '{sub.source}' by field "
                                    f"'{f}', which is not declared (fields: {list(fields)})")
            if (sub.source, sub.stream) in seen:
                raise SpecError(f"bolt '{name}' subscribes to stream '{sub.stream}' of '{sub.source}' twice")
            seen.add((sub.source, sub.stream))
        if comp.kind == "bolt" and not comp.inputs:
            raise SpecError(f"bolt '{name}' subscribes to no stream; add a grouping such as "
                            f"topology.bolt('{name}', ...).shuffle('<source>')")
