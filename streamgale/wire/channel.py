"""The local channel between a worker and its supervisor: every message, typed and versioned.

A worker holds no ZooKeeper session. Its heartbeat thread owns one ZeroMQ
DEALER socket connected to its supervisor's ROUTER (``tcp://127.0.0.1:<port>``
on the node, ``inproc://...`` in an in-process cluster) and exchanges single
msgpack frames ``{"v": 1, "kind": <kind>, ...fields}``:

============== ============ =============================================================
kind           direction    fields
============== ============ =============================================================
heartbeat      worker ->    :class:`WorkerBeat`: topology id, slot port, pid, beat sequence,
                            executors, the control version applied, uptime
metrics        worker ->    :class:`WorkerMetrics`: the metrics snapshot (see
                            ``streamgale/runtime/metrics.py``)
error          worker ->    :class:`WorkerErrorReport`: an :class:`ErrorRecord` dict
control        -> worker    :class:`WorkerControl`: version, topology status, log levels and
                            the topology's assignment (dict)
============== ============ =============================================================

The supervisor answers a heartbeat whose ``control_version`` is not its own
with the current :class:`WorkerControl`, so a worker that starts, or missed a
message across a reconnection, catches up within one beat. The supervisor
forwards beats, metrics and errors to the nimbus leader in one
``supervisor_report`` RPC (:mod:`streamgale.wire.protocol`). Decoding
validates everything and raises :class:`ChannelError` naming the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from streamgale.cluster.records import Assignment, RecordError, TopologyRecord

CHANNEL_VERSION = 1
MAX_CHANNEL_BYTES = 16 << 20


class ChannelError(ValueError):
    """A channel frame is malformed."""


def _str(d: Mapping[str, Any], name: str) -> str:
    v = d.get(name)
    if not isinstance(v, str):
        raise ChannelError(f"{d.get('kind')}: field '{name}' must be a string, got {type(v).__name__}")
    return v


def _int(d: Mapping[str, Any], name: str) -> int:
    v = d.get(name)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ChannelError(f"{d.get('kind')}: field '{name}' must be an integer, got {type(v).__name__}")
    return v


def _num(d: Mapping[str, Any], name: str) -> float:
    v = d.get(name)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise ChannelError(f"{d.get('kind')}: field '{name}' must be a number, got {type(v).__name__}")
    return float(v)


def _dict(d: Mapping[str, Any], name: str) -> dict[str, Any]:
    v = d.get(name)
    if not isinstance(v, dict):
        raise ChannelError(f"{d.get('kind')}: field '{name}' must be a map, got {type(v).__name__}")
    return v


ExecutorList = tuple[tuple[str, tuple[int, ...]], ...]


def _executors(d: Mapping[str, Any]) -> ExecutorList:
    try:
        return tuple((str(c), tuple(int(t) for t in ts)) for c, ts in d["executors"])
    except (KeyError, TypeError, ValueError):
        raise ChannelError(f"{d.get('kind')}: field 'executors' must be a list of [component, [task, ...]]") \
            from None


@dataclass(frozen=True)
class WorkerBeat:
    """Sent by a worker's heartbeat thread every second; the loop thread cannot stall it.

    ``seq`` grows by one per beat of this process (nimbus judges liveness by
    seeing it change). Counters travel in :class:`WorkerMetrics`, not here.
    """

    KIND = "heartbeat"
    topology_id: str
    port: int
    pid: int
    seq: int
    executors: ExecutorList
    control_version: int
    uptime_s: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["executors"] = [[c, list(ts)] for c, ts in self.executors]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerBeat:
        return cls(_str(d, "topology_id"), _int(d, "port"), _int(d, "pid"), _int(d, "seq"), _executors(d),
                   _int(d, "control_version"), _num(d, "uptime_s"))


@dataclass(frozen=True)
class WorkerMetrics:
    KIND = "metrics"
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"report": self.report}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerMetrics:
        return cls(_dict(d, "report"))


@dataclass(frozen=True)
class WorkerErrorReport:
    """A component's error (or a slow component): an ErrorRecord's fields."""

    KIND = "error"
    record: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerErrorReport:
        return cls(_dict(d, "record"))


@dataclass(frozen=True)
class WorkerControl:
    """What a worker must know of its topology: status, log levels, where every task runs.

    ``assignment`` is :meth:`Assignment.to_dict` plus ``"version"``, or None
    once the topology's assignment is gone (the worker then stops).
    """

    KIND = "control"
    version: int
    status: str
    log_levels: dict[str, str]
    assignment: dict[str, Any] | None
    # component -> {"version": int, "path": str}: uploaded model files (on this node) to serve
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    # grows with every worker of the topology lost (streamgale.cluster.records.Loss): the
    # worker's spouts then fail their pending trees, once it runs with assignment version
    # ``loss_assignment`` or newer
    losses: int = 0
    loss_assignment: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerControl:
        assignment = d.get("assignment")
        if assignment is not None and not isinstance(assignment, dict):
            raise ChannelError("control: field 'assignment' must be a map or None")
        levels = _dict(d, "log_levels")
        losses, after = d.get("losses", 0), d.get("loss_assignment", 0)
        for name, value in (("losses", losses), ("loss_assignment", after)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ChannelError(f"control: field '{name}' must be an int")
        return cls(_int(d, "version"), _str(d, "status"), {str(k): str(v) for k, v in levels.items()}, assignment,
                   models_from_dict(d.get("models") or {}), losses, after)


def models_from_dict(d: Any) -> dict[str, dict[str, Any]]:
    """``{component: {"version": int, "path": str}}``, checked; ChannelError if malformed."""
    try:
        return {str(c): {"version": int(m["version"]), "path": str(m["path"])} for c, m in d.items()}
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ChannelError(f"control: field 'models' is malformed: {e}") from None


Message = WorkerBeat | WorkerMetrics | WorkerErrorReport | WorkerControl
_KINDS: dict[str, Any] = {c.KIND: c for c in (WorkerBeat, WorkerMetrics, WorkerErrorReport, WorkerControl)}


def encode(message: Message) -> bytes:
    return msgpack.packb({"v": CHANNEL_VERSION, "kind": message.KIND, **message.to_dict()}, use_bin_type=True)


def decode(frame: bytes) -> Message:
    """Decode and validate one frame; raise :class:`ChannelError` on anything wrong."""
    if len(frame) > MAX_CHANNEL_BYTES:
        raise ChannelError(f"channel frame is {len(frame)} bytes; the limit is {MAX_CHANNEL_BYTES}")
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as e:  # noqa: BLE001 - msgpack raises many types for bad input
        raise ChannelError(f"channel frame is not valid msgpack: {type(e).__name__}") from None
    if not isinstance(obj, dict) or obj.get("v") != CHANNEL_VERSION:
        raise ChannelError(f"channel frame has no version {CHANNEL_VERSION} header")
    kind = obj.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ChannelError(f"unknown channel message kind {str(obj.get('kind'))[:40]!r}")
    result: Message = cls.from_dict(obj)
    return result


# -- the launch: what a supervisor starts a worker with --------------------------------------

@dataclass(frozen=True)
class WorkerArgs:
    """A worker's command line (``python -m streamgale.worker``), as its supervisor builds it."""

    topology_id: str
    port: int
    supervisor_id: str
    host: str
    code_dir: Path
    worker_dir: Path
    config_file: Path | None
    channel: str  # the supervisor's channel, e.g. tcp://127.0.0.1:PORT
    scheme: str = "tcp"  # how workers reach each other: tcp, or inproc in an in-process cluster
    python: Path | None = None  # the topology's own environment's interpreter (None: the supervisor's)



# -- the launch file -------------------------------------------------------------------------

LAUNCH_FILE = "launch"


def write_launch(worker_dir: Path, record: TopologyRecord, assignment: Assignment,
                 models: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Written by the supervisor before it starts a worker: what the worker runs (and the
    uploaded model files it serves, as in :class:`WorkerControl`), so a worker needs no
    ZooKeeper to start. Replaced atomically."""
    body = {"v": CHANNEL_VERSION, "topology": record.to_dict(),
            "assignment": {**assignment.to_dict(), "version": assignment.version},
            "models": {c: dict(m) for c, m in (models or {}).items()}}
    path = worker_dir / LAUNCH_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgpack.packb(body, use_bin_type=True))
    os.replace(tmp, path)


def read_launch(worker_dir: Path) -> tuple[TopologyRecord, Assignment, dict[str, dict[str, Any]]]:
    """The worker's side of :func:`write_launch`; raises :class:`ChannelError` if unusable."""
    try:
        body = msgpack.unpackb((worker_dir / LAUNCH_FILE).read_bytes(), raw=False)
        record = TopologyRecord.from_dict(body["topology"])
        return record, assignment_from_dict(body["assignment"]), models_from_dict(body.get("models") or {})
    except (OSError, ValueError, KeyError, TypeError, RecordError, msgpack.UnpackException) as e:
        raise ChannelError(f"cannot read the launch file in {worker_dir}: {e}") from None


def assignment_from_dict(d: Mapping[str, Any]) -> Assignment:
    return Assignment.from_dict(d, int(d.get("version", -1)))
