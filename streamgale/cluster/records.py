"""Typed records of cluster state, as stored in ZooKeeper.

Each record has ``to_dict``/``from_dict`` and msgpack ``encode``/``decode``
with an explicit format version. Decoding validates types and raises
:class:`RecordError` on anything malformed; nothing here is ever unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from streamgale.wire.spec import SpecError, TopologySpec

FORMAT = 1

ACTIVE, INACTIVE, REBALANCING, KILLED = "ACTIVE", "INACTIVE", "REBALANCING", "KILLED"
STATUSES = (ACTIVE, INACTIVE, REBALANCING, KILLED)

ExecutorTasks = tuple[str, tuple[int, ...]]  # one executor as (component, its task ids); not the runtime's Executor


class RecordError(ValueError):
    """A stored or received record is malformed."""


def _encode(kind: str, body: dict[str, Any]) -> bytes:
    return msgpack.packb({"format": FORMAT, "kind": kind, **body}, use_bin_type=True)


def _decode(kind: str, data: bytes) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception as e:  # noqa: BLE001 - msgpack raises several types
        raise RecordError(f"{kind} record is not valid msgpack: {e}") from None
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise RecordError(f"expected a {kind} record, got {str(obj)[:80]!r}")
    if obj.get("format") != FORMAT:
        raise RecordError(f"{kind} record has format {obj.get('format')!r}; this version reads {FORMAT}")
    return obj


def _executors(value: Any) -> tuple[ExecutorTasks, ...]:
    out = []
    for item in value:
        component, tasks = item
        if not isinstance(component, str) or not all(isinstance(t, int) for t in tasks):
            raise RecordError(f"bad executor {item!r}")
        out.append((component, tuple(tasks)))
    return tuple(out)


def slot_id(supervisor_id: str, port: int) -> str:
    return f"{supervisor_id}:{port}"


@dataclass(frozen=True)
class SupervisorInfo:
    """A live supervisor (ephemeral znode ``supervisors/<id>``)."""

    id: str
    host: str
    ports: tuple[int, ...]
    cpu_count: int = 0
    memory_mb: int = 0
    started_at: float = 0.0
    log_port: int = 0  # where the supervisor serves its workers' logs (0: not served)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "ports": list(self.ports), "cpu_count": self.cpu_count,
                "memory_mb": self.memory_mb, "started_at": self.started_at, "log_port": self.log_port}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SupervisorInfo:
        try:
            return cls(str(d["id"]), str(d["host"]), tuple(int(p) for p in d["ports"]),
                       int(d.get("cpu_count", 0)), int(d.get("memory_mb", 0)), float(d.get("started_at", 0.0)),
                       int(d.get("log_port", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"bad supervisor record: {e}") from None

    def encode(self) -> bytes:
        return _encode("supervisor", self.to_dict())

    @classmethod
    def decode(cls, data: bytes) -> SupervisorInfo:
        return cls.from_dict(_decode("supervisor", data))


@dataclass(frozen=True)
class TopologyRecord:
    """A submitted topology (znode ``topologies/<id>``).

    ``spec`` is :meth:`Topology.spec` (a wire map given here is read into a
    :class:`TopologySpec`); ``parallelism`` the executors per
    component now in force (rebalance changes it); ``pending`` a pending
    action ``{"action": "kill"|"rebalance", "at": wall time, ...}`` that a
    restarted or standby nimbus resumes.
    """

    id: str
    name: str
    status: str
    spec: TopologySpec
    config: dict[str, Any]
    code_digest: str
    entry: str  # topology file name inside the code package
    workers: int
    parallelism: dict[str, int]
    submitted_at: float
    pending: dict[str, Any] | None = None
    log_levels: dict[str, str] = field(default_factory=dict)  # logger name -> level, applied by workers
    # component -> {"digest": sha256, "version": n}: the model file uploaded to a running model bolt
    # (stored beside the code package), which its workers serve instead of the one shipped in the code
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    owner: str = ""  # the key name that submitted it (security on); "" when security was off
    signature: str = ""  # nimbus's signature of (id, code_digest); supervisors verify it (security on)
    # logger name -> wall time when its level in log_levels expires (set-log-level -t); the leader drops it then
    log_level_expiry: dict[str, float] = field(default_factory=dict)

    def owners(self) -> frozenset[str]:
        """Who may manage it besides admins: its submitter and its ``topology.users``."""
        users = self.config.get("topology.users") or (self.config.get("topology") or {}).get("users") or ()
        names = [users] if isinstance(users, str) else list(users) if isinstance(users, (list, tuple)) else []
        return frozenset(n for n in [self.owner, *names] if isinstance(n, str) and n)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, TopologySpec):
            try:
                object.__setattr__(self, "spec", TopologySpec.from_dict(self.spec))
            except SpecError as e:
                raise RecordError(f"bad topology record: {e}") from None

    def with_(self, **changes: Any) -> TopologyRecord:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "status": self.status, "spec": self.spec.to_dict(),
                "config": self.config, "code_digest": self.code_digest, "entry": self.entry,
                "workers": self.workers, "parallelism": dict(self.parallelism),
                "submitted_at": self.submitted_at, "pending": self.pending, "log_levels": dict(self.log_levels),
                "models": {c: dict(m) for c, m in self.models.items()}, "owner": self.owner,
                "signature": self.signature, "log_level_expiry": dict(self.log_level_expiry)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TopologyRecord:
        try:
            rec = cls(str(d["id"]), str(d["name"]), str(d["status"]), TopologySpec.from_dict(d["spec"]),
                      dict(d["config"]),
                      str(d["code_digest"]), str(d["entry"]), int(d["workers"]),
                      {str(k): int(v) for k, v in d["parallelism"].items()}, float(d["submitted_at"]),
                      dict(d["pending"]) if d.get("pending") else None,
                      {str(k): str(v) for k, v in (d.get("log_levels") or {}).items()},
                      {str(c): {"digest": str(m["digest"]), "version": int(m["version"])}
                       for c, m in (d.get("models") or {}).items()},
                      str(d.get("owner") or ""), str(d.get("signature") or ""),
                      {str(k): float(v) for k, v in (d.get("log_level_expiry") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # SpecError is a ValueError
            raise RecordError(f"bad topology record: {e}") from None
        if rec.status not in STATUSES:
            raise RecordError(f"bad topology status {rec.status!r}")
        return rec

    def encode(self) -> bytes:
        return _encode("topology", self.to_dict())

    @classmethod
    def decode(cls, data: bytes) -> TopologyRecord:
        return cls.from_dict(_decode("topology", data))

    def executors(self) -> list[ExecutorTasks]:
        """Every executor of the topology under the current parallelism, in task order."""
        from streamgale.topology import layout_tasks, split_evenly

        components = self.spec.components
        out: list[ExecutorTasks] = []
        for name, tasks in layout_tasks({n: c.tasks for n, c in components.items()}).items():
            for group in split_evenly(tasks, self.parallelism.get(name, components[name].parallelism)):
                out.append((name, group))
        return out


@dataclass(frozen=True)
class SlotAssignment:
    """What one worker slot runs for a topology."""

    supervisor_id: str
    host: str
    port: int
    executors: tuple[ExecutorTasks, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"supervisor_id": self.supervisor_id, "host": self.host, "port": self.port,
                "executors": [[c, list(t)] for c, t in self.executors]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SlotAssignment:
        try:
            return cls(str(d["supervisor_id"]), str(d["host"]), int(d["port"]), _executors(d["executors"]))
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"bad slot assignment: {e}") from None

    @property
    def slot(self) -> str:
        return slot_id(self.supervisor_id, self.port)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Assignment:
    """Where a topology's executors run (znode ``assignments/<id>``).

    ``version`` is the znode version it was read at (not stored); writes are
    conditional on it.
    """

    topology_id: str
    code_digest: str
    slots: dict[str, SlotAssignment]  # slot id -> what runs there
    assigned_at: float = 0.0
    version: int = field(default=-1, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"topology_id": self.topology_id, "code_digest": self.code_digest,
                "slots": {k: v.to_dict() for k, v in self.slots.items()}, "assigned_at": self.assigned_at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], version: int = -1) -> Assignment:
        try:
            slots = {str(k): SlotAssignment.from_dict(v) for k, v in d["slots"].items()}
            return cls(str(d["topology_id"]), str(d["code_digest"]), slots, float(d.get("assigned_at", 0.0)),
                       version)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RecordError(f"bad assignment: {e}") from None

    def encode(self) -> bytes:
        return _encode("assignment", self.to_dict())

    @classmethod
    def decode(cls, data: bytes, version: int = -1) -> Assignment:
        return cls.from_dict(_decode("assignment", data), version)

    def task_endpoints(self) -> dict[int, str]:
        """Task id -> ``host:port`` of the worker running it."""
        return {t: s.endpoint for s in self.slots.values() for _, ts in s.executors for t in ts}

    def same_placement(self, other: Assignment | None) -> bool:
        return other is not None and self.slots == other.slots and self.code_digest == other.code_digest


# Errors of no component, kept like a component's: a code package a supervisor refused (or whose
# Python environment it could not build), a worker that died, a worker whose component could not start.
PACKAGE_ERRORS = "__package"
WORKER_ERRORS = "__worker"
START_ERRORS = "__start"


@dataclass(frozen=True)
class Loss:
    """The latest loss of a worker of a topology (``losses/<topology id>``): a worker died, or
    nimbus moved executors off a slot that stopped heartbeating. ``epoch`` is the znode's
    version + 1, so it grows with every loss; the topology's spouts fail their pending trees
    at once when it grows (docs/reliability.md), instead of waiting for the message timeout.
    ``assignment``: the assignment version that no longer sends tuples to the lost worker (the
    one that moved its executors, or the current one when its slot is relaunched in place):
    a worker fails its trees only once it runs with that version, so the replays do not go to
    the lost worker's address."""

    epoch: int
    slot: str
    reason: str
    time: float  # wall clock at the writer
    assignment: int = 0

    def encode(self) -> bytes:
        return _encode("loss", {"slot": self.slot, "reason": self.reason, "time": self.time,
                                "assignment": self.assignment})

    @classmethod
    def decode(cls, data: bytes, version: int) -> Loss:
        d = _decode("loss", data)
        try:
            return cls(version + 1, str(d["slot"]), str(d["reason"]), float(d["time"]), int(d.get("assignment", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"bad loss record: {e}") from None


@dataclass(frozen=True)
class ErrorRecord:
    """A user exception reported by a worker (kept per component, newest last)."""

    component: str
    task: int
    host: str
    port: int
    time: float
    message: str  # first line: "ExcType: text"; then the traceback

    def to_dict(self) -> dict[str, Any]:
        return {"component": self.component, "task": self.task, "host": self.host, "port": self.port,
                "time": self.time, "message": self.message}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ErrorRecord:
        try:
            return cls(str(d["component"]), int(d["task"]), str(d["host"]), int(d["port"]), float(d["time"]),
                       str(d["message"]))
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"bad error record: {e}") from None

    def encode(self) -> bytes:
        return _encode("error", self.to_dict())

    @classmethod
    def decode(cls, data: bytes) -> ErrorRecord:
        return cls.from_dict(_decode("error", data))
