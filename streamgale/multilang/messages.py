"""The multi-lang messages, as Storm documents them (pure, no I/O).

What StreamGale writes to a subprocess is built here; what a subprocess writes
is checked here (:func:`command`), so the components above deal in checked
fields only. docs/multilang.md lists every message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamgale.components import TopologyContext
from streamgale.tuples import SYSTEM_COMPONENT, SYSTEM_TASK, TICK_STREAM

from .framing import ProtocolError

HEARTBEAT_STREAM = "__heartbeat"

# Storm's names for the settings a multi-lang library reads (pystorm: topology.name, topology.debug).
STORM_KEYS = {
    "topology.message_timeout": "topology.message.timeout.secs",
    "topology.max_spout_pending": "topology.max.spout.pending",
    "topology.tick_interval": "topology.tick.tuple.freq.secs",
    "topology.workers": "topology.workers",
    "topology.subprocess_timeout": "topology.subprocess.timeout.secs",
}

# Storm's grouping type names (a global grouping is Storm's fields grouping on no fields).
STORM_GROUPINGS = {"shuffle": "SHUFFLE", "fields": "FIELDS", "all": "ALL", "global": "FIELDS", "none": "NONE",
                   "direct": "DIRECT", "local_or_shuffle": "LOCAL_OR_SHUFFLE", "partial_key": "CUSTOM_SERIALIZED",
                   "custom": "CUSTOM_SERIALIZED"}

LOG_LEVELS = {0: "TRACE", 1: "DEBUG", 2: "INFO", 3: "WARN", 4: "ERROR"}

# What a subprocess may send, and the fields each command must carry.
BOLT_COMMANDS = {"emit": ("tuple",), "ack": ("id",), "fail": ("id",), "log": ("msg",), "error": ("msg",),
                 "metrics": ("name",), "sync": ()}
SPOUT_COMMANDS = {"emit": ("tuple",), "log": ("msg",), "error": ("msg",), "metrics": ("name",), "sync": ()}


def _grouping(spec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": STORM_GROUPINGS.get(spec["type"], "CUSTOM_SERIALIZED")}
    if spec["type"] in ("fields", "global"):
        out["fields"] = list(spec.get("fields", ()))
    return out


def storm_conf(context: TopologyContext, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``conf`` of the handshake: StreamGale's settings by their own names, the ones a
    multi-lang library reads by Storm's names too, and ``topology.name``."""
    conf: dict[str, Any] = {k: v for k, v in context.config.items()
                            if isinstance(v, (str, int, float, bool, type(None), list, tuple))}
    for ours, storms in STORM_KEYS.items():
        if ours in conf:
            conf[storms] = conf[ours]
    conf["topology.name"] = context.topology
    conf.setdefault("topology.debug", False)
    conf.update(extra or {})
    return conf


def storm_context(context: TopologyContext) -> dict[str, Any]:
    """The ``context`` of the handshake, with the keys Storm (0.10 on) gives."""
    me = context.component
    targets: dict[str, dict[str, Any]] = {}
    sources: dict[str, dict[str, Any]] = {}
    for (source, stream, target), spec in context.groupings.items():
        if source == me:
            targets.setdefault(stream, {})[target] = _grouping(spec)
        if target == me:
            sources.setdefault(source, {})[stream] = _grouping(spec)
    source_fields: dict[str, dict[str, list[str]]] = {}
    for (source, stream), fields in context.sources.items():
        source_fields.setdefault(source, {})[stream] = list(fields)
    return {
        "task->component": {str(t): c for c, tasks in context.component_tasks.items() for t in tasks},
        "taskid": context.task_id,
        "componentid": me,
        "streams": list(context.outputs),
        "stream->outputfields": {s: list(f) for s, f in context.outputs.items()},
        "stream->target->grouping": targets,
        "source->stream->grouping": sources,
        "source->stream->fields": source_fields,
    }


def setup(context: TopologyContext, pid_dir: str, extra_conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"conf": storm_conf(context, extra_conf), "pidDir": pid_dir, "context": storm_context(context)}


def tick(tuple_id: str, interval: float) -> dict[str, Any]:
    """A tick, its one value the interval in seconds, as Storm's carries its frequency."""
    return {"id": tuple_id, "comp": SYSTEM_COMPONENT, "stream": TICK_STREAM, "task": SYSTEM_TASK,
            "tuple": [interval]}


def heartbeat(tuple_id: str) -> dict[str, Any]:
    """What a bolt's subprocess must answer with ``sync`` (Storm: a null comp, task -1)."""
    return {"id": tuple_id, "comp": None, "stream": HEARTBEAT_STREAM, "task": SYSTEM_TASK, "tuple": []}


def spout_command(command: str, msg_id: Any = "") -> dict[str, Any]:
    """``next``, ``ack``, ``fail``, ``activate``, ``deactivate``: each answered by ``sync``."""
    return {"command": command, "id": msg_id}


def handshake_pid(message: Any) -> int:
    """The subprocess's answer to the handshake: ``{"pid": 1234}``."""
    pid = message.get("pid") if isinstance(message, dict) else None
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ProtocolError(f"answered the handshake with {message!r:.120}, not {{\"pid\": <its process id>}}")
    return pid


def command(message: Any, allowed: Mapping[str, tuple[str, ...]]) -> str:
    """The command of a message from a subprocess, after checking it carries its fields."""
    if not isinstance(message, dict):
        raise ProtocolError(f"sent {message!r:.120}, which is not a command (a map with a 'command' key)")
    cmd = message.get("command")
    if not isinstance(cmd, str) or cmd not in allowed:
        raise ProtocolError(f"sent an unknown command {cmd!r} in {message!r:.120}; the commands are "
                            f"{', '.join(allowed)}")
    for key in allowed[cmd]:
        if key not in message:
            raise ProtocolError(f"sent '{cmd}' without '{key}': {message!r:.120}")
    if cmd == "emit":
        values = message["tuple"]
        if not isinstance(values, list):
            raise ProtocolError(f"sent 'emit' whose 'tuple' is not a list: {message!r:.120}")
        anchors = message.get("anchors")
        if anchors is not None and not isinstance(anchors, list):
            raise ProtocolError(f"sent 'emit' whose 'anchors' is not a list of tuple ids: {message!r:.120}")
        task = message.get("task")
        if task is not None and (isinstance(task, bool) or not isinstance(task, int)):
            raise ProtocolError(f"sent 'emit' whose direct 'task' is not a task id: {message!r:.120}")
    return cmd
