"""Validation of a submitted topology spec (pure; nimbus never runs user code).

The client validated the real topology before upload; nimbus checks the spec
again because it arrives from the network.
"""

from __future__ import annotations

import re
from typing import Any

from streamgale.groupings import KINDS
from streamgale.runtime.acking import ACK_RESULT_STREAM, ACKER

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MAX_COMPONENTS = 1000
MAX_TASKS = 100_000


class SpecError(ValueError):
    """The spec is invalid; the message names the fault."""


def _int(value: Any, what: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise SpecError(f"{what} must be an integer >= {lo}, got {value!r}")
    return value


def validate_spec(spec: Any, name: str) -> None:
    """Raise SpecError naming the first fault in ``spec`` (see Topology.spec)."""
    if not NAME_RE.match(name):
        raise SpecError(f"topology name {name!r} is invalid: use 1-64 letters, digits, '_' or '-', "
                        "starting with a letter")
    if not isinstance(spec, dict) or not isinstance(spec.get("components"), dict):
        raise SpecError("spec must be a mapping with a 'components' mapping")
    components = spec["components"]
    if not components or len(components) > MAX_COMPONENTS:
        raise SpecError(f"a topology needs 1 to {MAX_COMPONENTS} components, got {len(components)}")
    total_tasks = 0
    for cname, comp in components.items():
        if cname == ACKER:
            if not isinstance(comp, dict) or comp.get("kind") != "acker" or comp.get("inputs") != []:
                raise SpecError(f"system component '{ACKER}' must have kind 'acker' and no inputs")
        elif not isinstance(cname, str) or not NAME_RE.match(cname):
            raise SpecError(f"component name {cname!r} is invalid")
        elif not isinstance(comp, dict) or comp.get("kind") not in ("spout", "bolt"):
            raise SpecError(f"component '{cname}' must have kind 'spout' or 'bolt'")
        p = _int(comp.get("parallelism"), f"parallelism of '{cname}'")
        tasks = _int(comp.get("tasks"), f"tasks of '{cname}'")
        if tasks < p:
            raise SpecError(f"component '{cname}' has fewer tasks ({tasks}) than executors ({p})")
        total_tasks += tasks
        outputs = comp.get("outputs")
        if not isinstance(outputs, dict) or not all(
                isinstance(s, str) and isinstance(f, list) and all(isinstance(x, str) for x in f)
                for s, f in outputs.items()):
            raise SpecError(f"outputs of '{cname}' must map stream names to lists of field names")
        if not isinstance(comp.get("inputs"), list):
            raise SpecError(f"inputs of '{cname}' must be a list")
    if total_tasks > MAX_TASKS:
        raise SpecError(f"a topology may have at most {MAX_TASKS} tasks, got {total_tasks}")
    if not any(c["kind"] == "spout" for c in components.values()):
        raise SpecError("the topology has no spout")
    for cname, comp in components.items():
        for sub in comp["inputs"]:
            if not isinstance(sub, dict):
                raise SpecError(f"an input of '{cname}' is not a mapping")
            source, stream, kind = sub.get("source"), sub.get("stream"), sub.get("type")
            if source == ACKER and (comp["kind"], stream, kind) == ("spout", ACK_RESULT_STREAM, "direct"):
                continue  # the system subscription every spout has: ack results, direct from the acker
            if source not in components or source == ACKER:
                raise SpecError(f"bolt '{cname}' subscribes to unknown component {source!r}")
            declared = components[source]["outputs"]
            if stream not in declared:
                raise SpecError(f"component '{cname}' subscribes to stream {stream!r} of '{source}', "
                                f"which declares only {sorted(declared)}")
            if kind not in KINDS:
                raise SpecError(f"bolt '{cname}' uses unknown grouping {kind!r} (known: {', '.join(KINDS)})")
            for f in sub.get("fields", []):
                if f not in declared[stream]:
                    raise SpecError(f"bolt '{cname}' groups stream '{stream}' of '{source}' by undeclared "
                                    f"field {f!r}")
