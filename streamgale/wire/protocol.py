"""Nimbus's client API on the wire: every message, typed and versioned.

Frames are msgpack maps (never pickle), one ZeroMQ frame per message.

A request is ``{"v": 1, "id": <int>, "op": <str>, "args": {...}}``; ``args``
holds exactly the fields of the op's request class below (unknown fields are
rejected, missing optional fields take their defaults). A response echoes the
id: ``{"v": 1, "id": <id>, "ok": true, "result": ...}`` or ``{"v": 1, "id":
<id>, "ok": false, "error": {"type": ..., "message": ..., "leader":
"host:port" | None}}``.

=============== ==================================================== =====================================
op              args (request class)                                 result
=============== ==================================================== =====================================
submit          Submit(name, spec, config, entry, code, code_digest) ``{"topology_id": str}``
kill            Kill(name, wait=None)                                ``{}``
activate        Activate(name)                                       ``{}``
deactivate      Deactivate(name)                                     ``{}``
rebalance       Rebalance(name, wait=None, workers=None,             ``{}``
                parallelism={})
list            ListTopologies()                                     ``[{"name", "id", "status", "workers",
                                                                     "executors", "tasks", "uptime"}, ...]``
topology_info   TopologyInfo(name)                                   ``{"topology": TopologyRecord dict,
                                                                     "assignment": Assignment dict | None,
                                                                     "errors": {component: [ErrorRecord
                                                                     dict, ...]}}``
cluster_info    ClusterInfo()                                        ``{"leader": "host:port" | None,
                                                                     "nimbuses": [...], "supervisors":
                                                                     [{...}, ...], "topologies": int,
                                                                     "bad_input": [BadInput, ...]}``
download_code   DownloadCode(topology_id)                            ``{"code": bytes, "digest": str}``
update_model    UpdateModel(name, component, model, digest)          ``{"version": int}`` (leader only)
download_model  DownloadModel(topology_id, component)                ``{"model": bytes, "digest": str}``
ping            Ping()                                               ``{"address": "host:port",
                                                                     "leader": bool}``
topology_stats  TopologyStats(name)                                  windowed metrics per component,
                                                                     task and worker (see
                                                                     ``nimbus/metrics.py``)
supervisor_     SupervisorReport(supervisor_id, heartbeats=[],       ``{}`` (leader only)
report          metrics=[], errors=[], counters={})
set_log_level   SetLogLevel(name, logger, level="", timeout=None,    ``{}`` (leader only)
                reset=False)
topology_config TopologyConfig(name)                                 ``{"config": {key: value},
                                                                     "topology_keys": [key, ...]}``
read_log        ReadLog(topology_id, port, offset=-1,                ``{"data": bytes, "offset": int,
                max_bytes=65536) -- served by supervisors            "size": int}``
=============== ==================================================== =====================================

``BadInput`` (in ``cluster_info``) is one daemon's count of what it refused since it
started: ``{"daemon": "nimbus" | "supervisor", "id": str, "host": str, "rejected_requests",
"refused_handshakes", "denied_keys", "malformed_messages"?: int, "age_s"?: float}`` (see
:data:`BAD_INPUT_COUNTERS`); the answering nimbus lists itself and the supervisors that reported
to it (the leader hears from every supervisor; a standby only knows itself).

Error types are :data:`ERROR_TYPES`; each has an exception class here
(:class:`NotFound`, ...), so a handler can raise one and the server turn it
into an error reply with :func:`encode_exception`, and a client turn an error
reply back into the same exception with :func:`error_from_reply`.

Decoding validates everything and raises :class:`ProtocolError`, naming the
field at fault and what was expected; when the request id could be read, the
error carries it (``request_id``) so the server can answer with BadRequest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

import msgpack

from .spec import SpecError, TopologySpec

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_MESSAGE_BYTES = 128 << 20  # default frame limit, either direction

NOT_FOUND = "NotFound"
ALREADY_EXISTS = "AlreadyExists"
INVALID_TOPOLOGY = "InvalidTopology"
NOT_LEADER = "NotLeader"
BAD_REQUEST = "BadRequest"
INTERNAL = "Internal"
UNAVAILABLE = "Unavailable"
PERMISSION_DENIED = "PermissionDenied"
UNAUTHENTICATED = "Unauthenticated"
ERROR_TYPES = (NOT_FOUND, ALREADY_EXISTS, INVALID_TOPOLOGY, NOT_LEADER, BAD_REQUEST, INTERNAL, UNAVAILABLE,
               PERMISSION_DENIED, UNAUTHENTICATED)


class ProtocolError(ValueError):
    """A frame is not a valid message; ``request_id`` is its id when that could be read."""

    def __init__(self, message: str, request_id: int | None = None):
        super().__init__(message)
        self.request_id = request_id


# -- errors a client sees ------------------------------------------------------------------------


class NimbusError(Exception):
    """An error answered by nimbus (or raised on the way there).

    ``type`` is one of :data:`ERROR_TYPES`; ``str(e)`` is the server's message;
    ``leader`` is the leader's ``host:port`` when the server named one.
    """

    type: str = INTERNAL

    def __init__(self, message: str, *, type: str | None = None, leader: str | None = None):  # noqa: A002
        super().__init__(message)
        if type is not None:
            self.type = type
        self.leader = leader


class NimbusUnavailable(NimbusError):
    """Nimbus could not be reached in time, or says it cannot serve now (e.g. ZooKeeper is down)."""

    type = UNAVAILABLE


class NotFound(NimbusError):
    type = NOT_FOUND


class AlreadyExists(NimbusError):
    type = ALREADY_EXISTS


class InvalidTopology(NimbusError):
    type = INVALID_TOPOLOGY


class BadRequest(NimbusError):
    type = BAD_REQUEST


class NotLeader(NimbusError):
    """Sent by a standby nimbus for a write; ``leader`` says where to go, if known."""

    type = NOT_LEADER


class PermissionDenied(NimbusError):
    """The caller is authenticated but its role does not allow the request (security on)."""

    type = PERMISSION_DENIED


class Unauthenticated(NimbusError):
    """The server refused this client's key, or the client has none (raised client-side at the handshake)."""

    type = UNAUTHENTICATED


_ERROR_CLASSES: dict[str, type[NimbusError]] = {
    cls.type: cls for cls in (NimbusUnavailable, NotFound, AlreadyExists, InvalidTopology, BadRequest, NotLeader,
                              PermissionDenied, Unauthenticated)
}


def error_from_reply(error: Mapping[str, Any]) -> NimbusError:
    """The exception for a decoded error reply (``Internal`` and unknown types give :class:`NimbusError`)."""
    cls = _ERROR_CLASSES.get(error["type"], NimbusError)
    return cls(error["message"], type=error["type"], leader=error.get("leader"))


# -- field checks ---------------------------------------------------------------------------------


class _Expected(Exception):
    """Raised by a check: the argument is what was expected instead."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise _Expected("a string")
    return v


def _binary(v: Any) -> bytes:
    if not isinstance(v, (bytes, bytearray, memoryview)):
        raise _Expected("bytes")
    return bytes(v)


def _map(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise _Expected("a map with string keys")
    return v


def _spec(v: Any) -> TopologySpec:
    if not isinstance(v, (dict, TopologySpec)) or (isinstance(v, dict) and not all(isinstance(k, str) for k in v)):
        raise _Expected("a map with string keys")
    try:
        return TopologySpec.from_dict(v)
    except SpecError as e:
        raise _Expected(f"a topology spec ({e})") from None


def _seconds(v: Any) -> float | None:
    if v is None:
        return None
    if not (_is_int(v) or isinstance(v, float)) or not math.isfinite(v) or v < 0:
        raise _Expected("a number of seconds >= 0, or None")
    return float(v)


def _count(v: Any) -> int | None:
    if v is None:
        return None
    if not _is_int(v) or v < 1:
        raise _Expected("an integer >= 1, or None")
    return v


def _parallelism(v: Any) -> dict[str, int]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) and _is_int(n) and n >= 1 for k, n in v.items()):
        raise _Expected("a map of component name to an integer >= 1")
    return dict(v)


def _arg(check: Callable[[Any], Any], **kwargs: Any) -> Any:
    return field(metadata={"check": check}, **kwargs)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# -- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """Base of every request. Construction validates and normalises the fields.

    ``request_id`` is the envelope's id: set by the client when it sends, and
    by :func:`decode_request`; it takes no part in equality.
    """

    OP: ClassVar[str] = ""
    request_id: int = field(default=0, kw_only=True, compare=False)

    def __post_init__(self) -> None:
        if not _is_int(self.request_id) or not 0 <= self.request_id < 1 << 64:
            raise ProtocolError(f"request id must be an integer in [0, 2**64), got {_show(self.request_id)}")
        for f in fields(self):
            check = f.metadata.get("check")
            if check is None:
                continue
            value = getattr(self, f.name)
            try:
                object.__setattr__(self, f.name, check(value))
            except _Expected as e:
                raise ProtocolError(f"{self.OP}: field '{f.name}' must be {e}, got "
                                    f"{type(value).__name__} {_show(value)}", self.request_id) from None

    def args(self) -> dict[str, Any]:
        """The fields as the wire carries them (typed records as their maps)."""
        out = {}
        for f in fields(self):
            if f.name != "request_id":
                value = getattr(self, f.name)
                out[f.name] = value.to_dict() if isinstance(value, TopologySpec) else value
        return out

    def encode(self, request_id: int | None = None) -> bytes:
        rid = self.request_id if request_id is None else request_id
        return msgpack.packb({"v": PROTOCOL_VERSION, "id": rid, "op": self.OP, "args": self.args()},
                             use_bin_type=True)

    @classmethod
    def from_args(cls, args: Mapping[str, Any], request_id: int = 0) -> Request:
        known = {f.name: f for f in fields(cls) if f.name != "request_id"}
        unknown = sorted(str(k) for k in args if k not in known)
        if unknown:
            raise ProtocolError(f"{cls.OP}: unexpected field(s) {', '.join(map(repr, unknown))} "
                                f"(fields: {', '.join(known) or 'none'})", request_id)
        for name, f in known.items():
            if name not in args and f.default is MISSING and f.default_factory is MISSING:
                raise ProtocolError(f"{cls.OP}: missing field '{name}'", request_id)
        return cls(**args, request_id=request_id)



@dataclass(frozen=True)
class Submit(Request):
    OP: ClassVar[str] = "submit"
    name: str = _arg(_string)
    spec: TopologySpec = _arg(_spec)  # a wire map is read into the typed record (its shape checked)
    config: dict[str, Any] = _arg(_map)
    entry: str = _arg(_string)  # topology file name inside the code package
    code: bytes = _arg(_binary, repr=False)
    code_digest: str = _arg(_string)


@dataclass(frozen=True)
class Kill(Request):
    OP: ClassVar[str] = "kill"
    name: str = _arg(_string)
    wait: float | None = _arg(_seconds, default=None)


@dataclass(frozen=True)
class Activate(Request):
    OP: ClassVar[str] = "activate"
    name: str = _arg(_string)


@dataclass(frozen=True)
class Deactivate(Request):
    OP: ClassVar[str] = "deactivate"
    name: str = _arg(_string)


@dataclass(frozen=True)
class Rebalance(Request):
    OP: ClassVar[str] = "rebalance"
    name: str = _arg(_string)
    wait: float | None = _arg(_seconds, default=None)
    workers: int | None = _arg(_count, default=None)
    parallelism: dict[str, int] = _arg(_parallelism, default_factory=dict)


@dataclass(frozen=True)
class ListTopologies(Request):
    OP: ClassVar[str] = "list"


@dataclass(frozen=True)
class TopologyInfo(Request):
    OP: ClassVar[str] = "topology_info"
    name: str = _arg(_string)


@dataclass(frozen=True)
class ClusterInfo(Request):
    OP: ClassVar[str] = "cluster_info"


@dataclass(frozen=True)
class DownloadCode(Request):
    OP: ClassVar[str] = "download_code"
    topology_id: str = _arg(_string)


@dataclass(frozen=True)
class UpdateModel(Request):
    """A new model file for a running model bolt; ``digest`` is its sha256, checked by nimbus."""

    OP: ClassVar[str] = "update_model"
    name: str = _arg(_string)
    component: str = _arg(_string)
    model: bytes = _arg(_binary, repr=False)
    digest: str = _arg(_string)


@dataclass(frozen=True)
class DownloadModel(Request):
    OP: ClassVar[str] = "download_model"
    topology_id: str = _arg(_string)
    component: str = _arg(_string)


@dataclass(frozen=True)
class Ping(Request):
    OP: ClassVar[str] = "ping"


def _list(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise _Expected("a list")
    return v


# The windows of ``topology_stats`` (name, seconds; None: the topology's whole life), and the one
# ``streamgale stats`` and the UI show unless told otherwise.
STATS_WINDOWS: tuple[tuple[str, float | None], ...] = (("600", 600.0), ("10800", 10800.0), ("86400", 86400.0),
                                                      ("all", None))
DEFAULT_STATS_WINDOW = "600"


@dataclass(frozen=True)
class TopologyStats(Request):
    OP: ClassVar[str] = "topology_stats"
    name: str = _arg(_string)


def _level(v: Any) -> str:
    levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    if not isinstance(v, str) or v.upper() not in levels:
        raise _Expected(f"a log level ({', '.join(levels)})")
    return v.upper()


def _port(v: Any) -> int:
    if not _is_int(v) or not 1 <= v <= 65535:
        raise _Expected("an integer port 1-65535")
    return int(v)


def _offset(v: Any) -> int:
    if not _is_int(v) or v < -1:
        raise _Expected("an integer byte offset >= 0, or -1 (from the end)")
    return int(v)


def _byte_count(v: Any) -> int:
    if not _is_int(v) or v < 1:
        raise _Expected("an integer number of bytes >= 1")
    return int(v)


def _level_or_none(v: Any) -> str:
    return "" if v in ("", None) else _level(v)


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Expected("true or false")
    return v


@dataclass(frozen=True)
class SetLogLevel(Request):
    """Set a logger's level in every worker of the topology ("" is the root logger).

    ``timeout`` (seconds > 0): the level reverts after it; ``reset``: put the logger back to
    what it was before any set_log_level (``level`` is then ""). Nimbus checks that exactly one
    of ``level`` and ``reset`` is given.
    """

    OP: ClassVar[str] = "set_log_level"
    name: str = _arg(_string)
    logger: str = _arg(_string)
    level: str = _arg(_level_or_none, default="")
    timeout: float | None = _arg(_seconds, default=None)
    reset: bool = _arg(_flag, default=False)

    def args(self) -> dict[str, Any]:
        out = super().args()
        # Later fields: a nimbus older than them rejects the request, so they travel only when set.
        for name, unset in (("timeout", None), ("reset", False)):
            if out[name] == unset:
                del out[name]
        return out


@dataclass(frozen=True)
class TopologyConfig(Request):
    """The configuration topology ``name``'s workers run with: the cluster's config (as nimbus
    reads it) under the topology's own (Storm's getTopologyConf); secrets redacted."""

    OP: ClassVar[str] = "topology_config"
    name: str = _arg(_string)


@dataclass(frozen=True)
class ReadLog(Request):
    """Served by supervisors: a chunk of the log of the worker on ``port`` (offset -1: the last
    ``max_bytes``)."""

    OP: ClassVar[str] = "read_log"
    topology_id: str = _arg(_string)
    port: int = _arg(_port)
    offset: int = _arg(_offset, default=-1)
    max_bytes: int = _arg(_byte_count, default=65536)


# What a daemon counts of the bad input it refused, since it started (docs/observability.md).
BAD_INPUT_COUNTERS = {
    "rejected_requests": "requests on its API or log endpoint that were not valid messages",
    "refused_handshakes": "connections that failed or broke off the ZeroMQ handshake on that endpoint",
    "denied_keys": "CURVE handshakes its ZAP authenticator refused (unknown key or role; security on)",
    "malformed_messages": "malformed messages on a supervisor's worker channel",
}
MAX_COUNTERS = 32


def _counters(v: Any) -> dict[str, int]:
    if v is None:
        return {}
    if (not isinstance(v, dict) or len(v) > MAX_COUNTERS
            or not all(isinstance(k, str) and len(k) <= 64 and _is_int(n) and 0 <= n < 1 << 63
                       for k, n in v.items())):
        raise _Expected(f"a map of at most {MAX_COUNTERS} counter names to integers >= 0")
    return dict(v)


@dataclass(frozen=True)
class SupervisorReport(Request):
    """A supervisor's report, every second, to the nimbus leader (leader only).

    ``heartbeats``: the latest :class:`streamgale.wire.channel.WorkerBeat` dict
    of each worker on the node (nimbus judges a slot alive while its ``seq``
    changes), and for a slot whose worker cannot start because the supervisor
    refused its topology's code package, ``{"topology_id", "port", "seq",
    "executors": [], "code_refused": reason}`` (the slot is not at fault, so
    nimbus keeps it); ``metrics``: workers' metrics snapshots not sent before;
    ``errors``: :class:`ErrorRecord` dicts (component errors, slow
    components, worker crashes), which the leader stores in ZooKeeper;
    ``counters``: the supervisor's own bad-input counters
    (:data:`BAD_INPUT_COUNTERS`), which ``cluster_info`` shows.
    Heartbeats are per-second traffic and so never go through ZooKeeper.
    """

    OP: ClassVar[str] = "supervisor_report"
    supervisor_id: str = _arg(_string)
    heartbeats: list = _arg(_list, default_factory=list)
    metrics: list = _arg(_list, default_factory=list)
    errors: list = _arg(_list, default_factory=list)
    counters: dict[str, int] = _arg(_counters, default_factory=dict)

    def args(self) -> dict[str, Any]:
        out = super().args()
        if not self.counters:
            # A later field: a nimbus older than it rejects the report, so it travels only when non-zero.
            del out["counters"]
        return out


REQUESTS: dict[str, type[Request]] = {
    cls.OP: cls for cls in (Submit, Kill, Activate, Deactivate, Rebalance, ListTopologies, TopologyInfo,
                            ClusterInfo, DownloadCode, UpdateModel, DownloadModel, Ping, TopologyStats,
                            SupervisorReport, SetLogLevel, TopologyConfig, ReadLog)
}


# -- envelopes ------------------------------------------------------------------------------------


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def _unpack(frame: bytes, what: str, max_bytes: int) -> Any:
    if len(frame) > max_bytes:
        raise ProtocolError(f"{what} is {len(frame)} bytes; the limit is {max_bytes}")
    try:
        # unpackb bounds every string/array/map by the frame's length, and nesting by its own stack.
        return msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=_no_ext)
    except Exception as e:  # noqa: BLE001 - msgpack raises many types for bad input
        raise ProtocolError(f"{what} is not valid msgpack: {type(e).__name__}: {e}"[:200]) from None


def _envelope_id(obj: Any) -> int | None:
    rid = obj.get("id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, int) and _is_int(rid) and 0 <= rid < 1 << 64 else None


def _check_version(obj: dict[str, Any], what: str, rid: int | None) -> None:
    v = obj.get("v")
    if not (_is_int(v) and v in SUPPORTED_VERSIONS):
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise ProtocolError(f"{what} has protocol version {_show(v)}; supported version(s): {supported}", rid)


def decode_request(frame: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Request:
    """Decode and validate one request frame; raise :class:`ProtocolError` on anything wrong."""
    obj = _unpack(frame, "request", max_bytes)
    if not isinstance(obj, dict):
        raise ProtocolError(f"request must be a map, got {type(obj).__name__}")
    rid = _envelope_id(obj)
    if rid is None:
        raise ProtocolError(f"request has no valid 'id' (an integer in [0, 2**64)), got {_show(obj.get('id'))}")
    _check_version(obj, "request", rid)
    op = obj.get("op")
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProtocolError(f"unknown op {_show(op)} (known: {', '.join(sorted(REQUESTS))})", rid)
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(f"{op}: 'args' must be a map, got {type(args).__name__}", rid)
    return cls.from_args(args, rid)


def encode_response(request_id: int, result: Any) -> bytes:
    """A success reply; ``result`` must be msgpack-able (``TypeError`` otherwise)."""
    return msgpack.packb({"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result},
                         use_bin_type=True)


def encode_error(request_id: int, type: str, message: str, leader: str | None = None) -> bytes:  # noqa: A002
    """An error reply; ``type`` must be one of :data:`ERROR_TYPES`."""
    if type not in ERROR_TYPES:
        raise ValueError(f"unknown error type {type!r} (known: {', '.join(ERROR_TYPES)})")
    error = {"type": type, "message": str(message), "leader": leader}
    return msgpack.packb({"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": error},
                         use_bin_type=True)


def encode_exception(request_id: int, exc: NimbusError) -> bytes:
    """The error reply for a :class:`NimbusError` raised by a handler."""
    return encode_error(request_id, exc.type, str(exc), exc.leader)


def decode_response(frame: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[int, bool, Any]:
    """``(request_id, ok, result or error)``; an error is ``{"type", "message", "leader"}``.

    Raises :class:`ProtocolError` (with ``request_id`` when it could be read) on a malformed frame.
    An error type this version does not know is passed through (see :func:`error_from_reply`).
    """
    obj = _unpack(frame, "response", max_bytes)
    if not isinstance(obj, dict):
        raise ProtocolError(f"response must be a map, got {type(obj).__name__}")
    rid = _envelope_id(obj)
    if rid is None:
        raise ProtocolError(f"response has no valid 'id', got {_show(obj.get('id'))}")
    _check_version(obj, "response", rid)
    ok = obj.get("ok")
    if ok is True:
        if "result" not in obj:
            raise ProtocolError("response: 'result' is missing", rid)
        return rid, True, obj["result"]
    if ok is not False:
        raise ProtocolError(f"response: field 'ok' must be a boolean, got {_show(ok)}", rid)
    error = obj.get("error")
    if not isinstance(error, dict):
        raise ProtocolError(f"response: field 'error' must be a map, got {type(error).__name__}", rid)
    for name, valid, expected in (("type", isinstance(error.get("type"), str), "a string"),
                                  ("message", isinstance(error.get("message"), str), "a string"),
                                  ("leader", isinstance(error.get("leader"), (str, type(None))), "a string or None")):
        if not valid:
            raise ProtocolError(f"response: field 'error.{name}' must be {expected}, got "
                                f"{_show(error.get(name))}", rid)
    return rid, False, {"type": error["type"], "message": error["message"], "leader": error.get("leader")}
