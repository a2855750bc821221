"""The sockets of nimbus's client API: :class:`RpcServer` (ROUTER) and :class:`NimbusClient` (DEALER).

Messages are defined in :mod:`streamgale.wire.protocol`; this module only moves
frames. Each object owns one ZeroMQ socket and must be used by one thread
(the thread that created it), as pyzmq requires.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import zmq

from streamgale.ratelimit import RateLimitedLog
from streamgale.security import HandshakeMonitor, KeyFileError, Security
from streamgale.security.access import API

from .protocol import (
    BAD_REQUEST,
    INTERNAL,
    MAX_MESSAGE_BYTES,
    NOT_LEADER,
    Activate,
    AlreadyExists,
    BadRequest,
    ClusterInfo,
    Deactivate,
    DownloadCode,
    DownloadModel,
    InvalidTopology,
    Kill,
    ListTopologies,
    NimbusError,
    NimbusUnavailable,
    NotFound,
    NotLeader,
    PermissionDenied,
    Ping,
    ProtocolError,
    ReadLog,
    Rebalance,
    Request,
    SetLogLevel,
    Submit,
    SupervisorReport,
    TopologyConfig,
    TopologyInfo,
    TopologyStats,
    Unauthenticated,
    UpdateModel,
    decode_request,
    decode_response,
    encode_error,
    error_from_reply,
)
from .spec import TopologySpec

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "InvalidTopology",
    "NimbusClient",
    "NimbusError",
    "NimbusUnavailable",
    "NotFound",
    "NotLeader",
    "PermissionDenied",
    "ProtocolError",
    "RpcServer",
    "Unauthenticated",
]

log = logging.getLogger(__name__)


class RpcServer:
    """Nimbus's end: a ROUTER socket bound on ``tcp://host:port``.

    Owned by ONE thread: create it, :meth:`poll`, :meth:`reply` and :meth:`close`
    from the same thread (nimbus's main loop). ``port`` 0 binds a free port;
    :attr:`port` says which. Frames over ``max_message_bytes`` are dropped by
    ZeroMQ itself (it disconnects that peer). Nothing a peer sends can make
    :meth:`poll` raise; every reply is sent without blocking.

    With ``security`` on, the socket is a CURVE server: only authorized keys get
    past the handshake (refusals are logged, rate-limited), and each request
    comes with the user id (key name) it was sent with.

    Bad input is counted, security on or off: :attr:`rejected` (frames that were
    no valid request) and :attr:`refused_handshakes` (connections that failed or
    broke off the ZeroMQ handshake: garbage, a wrong mechanism or key, a port scan).
    """

    max_batch = 1000  # requests taken per poll, so one flood cannot starve the caller's other work

    def __init__(self, context: zmq.Context, host: str, port: int,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, *, clock: Callable[[], float] = time.monotonic,
                 security: Security | None = None):
        self.max_message_bytes = max_message_bytes
        self.rejected = 0  # frames refused since start (answered with BadRequest or dropped)
        self.refused_handshakes = 0  # connections that failed or broke off the handshake since start
        self._warn = RateLimitedLog(log, clock=clock).warning
        self._socket = context.socket(zmq.ROUTER)
        self._secure = security is not None and security.enabled
        self._monitor: HandshakeMonitor | None = None
        endpoint = f"tcp://{host}:{port or '*'}"
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            if security is not None and security.enabled:
                security.serve(self._socket, API)
            self._monitor = HandshakeMonitor(self._socket)  # security off too: garbage fails the handshake
            self._socket.bind(endpoint)
        except (zmq.ZMQError, KeyFileError) as e:
            self.close()
            if isinstance(e, KeyFileError):
                raise
            raise OSError(e.errno, f"cannot listen on {endpoint}: {e.strerror} "
                                   f"(is another nimbus already running there?)") from None
        last = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.host = host
        self.port = int(last.rsplit(":", 1)[1])

    @property
    def closed(self) -> bool:
        return self._socket.closed

    def poll(self, timeout: float | None) -> list[tuple[bytes, Request, str | None]]:
        """Every valid request ready now, waiting up to ``timeout`` seconds (None: forever) for the first.

        Returns ``(identity, request, user)`` triples (``user``: the key name the
        request came with; None with security off); answer each with :meth:`reply`
        using ``request.request_id``. Invalid frames are handled here and never
        returned: when their request id can be read they are answered with a
        BadRequest error at once, otherwise dropped (with a rate-limited warning).
        """
        self._note_handshakes()
        wait_ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
        if not self._socket.poll(wait_ms, zmq.POLLIN):
            return []
        out: list[tuple[bytes, Request, str | None]] = []
        for _ in range(self.max_batch):
            message = self._receive()
            if message is None:
                break
            identity, payload, peer, user = message
            request = self._decode(identity, payload, peer)
            if request is not None:
                out.append((identity, request, user))
        return out

    def _note_handshakes(self) -> None:
        if self._monitor is None:
            return
        for event, _ in self._monitor.events():
            self.refused_handshakes += 1
            if not self._secure:
                if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:  # not a mere probe that connects and closes
                    self._warn("dropped a connection on port %d that broke the ZeroMQ protocol", self.port)
                continue
            reason = ("sent no CURVE key (security is on here)" if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                      else "failed the CURVE handshake")
            self._warn("refused a client on port %d that %s", self.port, reason)

    def _receive(self) -> tuple[bytes, bytes | None, str, str | None] | None:
        """``(identity, payload or None if the message was not exactly one frame, peer address, user id)``."""
        try:
            identity = self._socket.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        payload: bytes | None = None
        peer = "unknown peer"
        user: str | None = None
        frames = 0
        # ZeroMQ delivers a multipart message whole, so the rest is already here; read it
        # frame by frame so a message of many frames costs no memory.
        while self._socket.getsockopt(zmq.RCVMORE):
            frame = self._socket.recv(copy=False)
            frames += 1
            if frames == 1:
                payload = frame.bytes
                try:
                    peer = frame.get("Peer-Address")
                except (zmq.ZMQError, AttributeError):
                    pass
                if self._secure:
                    user = frame.get("User-Id")
        return identity, (payload if frames == 1 else None), peer, user

    def _decode(self, identity: bytes, payload: bytes | None, peer: str) -> Request | None:
        try:
            if payload is None:
                raise ProtocolError("request must be exactly one frame (is the client a DEALER?)")
            return decode_request(payload, self.max_message_bytes)
        except ProtocolError as e:
            self.rejected += 1
            if e.request_id is not None:
                self.reply(identity, encode_error(e.request_id, BAD_REQUEST, str(e)))
                self._warn("answered a bad request from %s with BadRequest: %s", peer, e)
            else:
                self._warn("dropped an unreadable request from %s: %s", peer, e)
        except Exception:  # noqa: BLE001 - a decoder bug must not take the API down
            self.rejected += 1
            log.exception("dropped a request from %s that could not be decoded", peer)
        return None

    def reply(self, identity: bytes, frame: bytes) -> None:
        """Send ``frame`` to the client ``identity``; never blocks (a gone or flooded client loses it)."""
        try:
            self._socket.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.Again:
            self._warn("dropped a reply: the client's queue is full")

    def close(self) -> None:
        """Close the socket (idempotent); pending replies are discarded."""
        if self._monitor is not None:
            self._socket.disable_monitor()
            self._monitor.close()
            self._monitor = None
        if not self._socket.closed:
            self._socket.close(linger=0)

    def __enter__(self) -> RpcServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _parse_address(address: str) -> str:
    text = address.strip()
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"nimbus address {address!r} is not HOST:PORT (e.g. 'nimbus1:6627')")
    return f"{host}:{int(port)}"


def _leader_named(error: dict[str, Any]) -> str | None:
    """The leader a NotLeader error points to, if it names a usable one."""
    if error["type"] != NOT_LEADER or not error.get("leader"):
        return None
    try:
        return _parse_address(error["leader"])
    except ValueError:
        return None


class _NoAnswer(Exception):
    """One nimbus address gave no reply in time; the text says how far it got."""


class NimbusClient:
    """A client of nimbus's API (``streamgale`` CLI, UI, supervisors).

    ``address`` is ``"host:port"`` or a list of them (several nimbuses): each
    call tries the one that answered last, then the others in turn, each for
    up to ``timeout`` seconds. A NotLeader reply naming the leader is retried
    once there. Errors raise :class:`NimbusError` subclasses with the
    server's message; no reply in time raises :class:`NimbusUnavailable`.

    Uses one DEALER socket, owned by the calling thread: use a client from one
    thread only (or give each thread its own). ``context`` defaults to the
    process's shared :meth:`zmq.Context.instance`.

    With ``security`` on the client proves its key; a server that refuses it (or
    that speaks another mechanism) raises :class:`Unauthenticated` at once with
    what is wrong, rather than a timeout.
    """

    def __init__(self, address: str | Sequence[str], timeout: float = 5.0, context: zmq.Context | None = None,
                 *, max_message_bytes: int = MAX_MESSAGE_BYTES, security: Security | None = None):
        addresses = [address] if isinstance(address, str) else list(address)
        if not addresses:
            raise ValueError("no nimbus address given")
        self.addresses = [_parse_address(a) for a in addresses]
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._context = context if context is not None else zmq.Context.instance()
        self._preferred = self.addresses[0]
        self.security = security if security is not None else Security.off()
        try:
            self.security.check_client()
        except KeyFileError as e:
            raise Unauthenticated(f"cannot authenticate to nimbus: {e}") from None
        self._socket: zmq.Socket | None = None
        self._monitor: HandshakeMonitor | None = None
        self._socket_address: str | None = None
        self._ids = itertools.count(1)

    # -- API -----------------------------------------------------------------------------------

    def submit(self, name: str, spec: TopologySpec | dict[str, Any], config: dict[str, Any], entry: str, code: bytes,
               code_digest: str) -> str:
        """Upload and start a topology; returns its topology id."""
        result = self._call(Submit, name, spec, config, entry, code, code_digest)
        if not isinstance(result, dict) or not isinstance(result.get("topology_id"), str):
            raise self._malformed("submit", result, '{"topology_id": str}')
        return result["topology_id"]

    def kill(self, name: str, wait: float | None = None) -> None:
        self._call(Kill, name, wait)

    def activate(self, name: str) -> dict[str, Any]:
        """Nimbus's answer: ``{}``, or when the topology is rebalancing, when the status applies."""
        return self._expect(dict, Activate, name)

    def deactivate(self, name: str) -> dict[str, Any]:
        return self._expect(dict, Deactivate, name)

    def rebalance(self, name: str, wait: float | None = None, workers: int | None = None,
                  parallelism: dict[str, int] | None = None) -> None:
        self._call(Rebalance, name, wait, workers, parallelism)

    def list_topologies(self) -> list[dict[str, Any]]:
        return self._expect(list, ListTopologies)

    def topology_info(self, name: str) -> dict[str, Any]:
        return self._expect(dict, TopologyInfo, name)

    def cluster_info(self) -> dict[str, Any]:
        return self._expect(dict, ClusterInfo)

    def download_code(self, topology_id: str) -> tuple[bytes, str]:
        """``(package bytes, digest)``; checking the digest is the caller's job."""
        result = self._call(DownloadCode, topology_id)
        if not (isinstance(result, dict) and isinstance(result.get("code"), bytes)
                and isinstance(result.get("digest"), str)):
            raise self._malformed("download_code", result, '{"code": bytes, "digest": str}')
        return result["code"], result["digest"]

    def update_model(self, name: str, component: str, model: bytes, digest: str) -> int:
        """Upload a new model file for ``component`` of topology ``name``; returns its version."""
        result = self._call(UpdateModel, name, component, model, digest)
        if not (isinstance(result, dict) and isinstance(result.get("version"), int)):
            raise self._malformed("update_model", result, '{"version": int}')
        return int(result["version"])

    def download_model(self, topology_id: str, component: str) -> tuple[bytes, str]:
        """``(model file bytes, digest)``; checking the digest is the caller's job."""
        result = self._call(DownloadModel, topology_id, component)
        if not (isinstance(result, dict) and isinstance(result.get("model"), bytes)
                and isinstance(result.get("digest"), str)):
            raise self._malformed("download_model", result, '{"model": bytes, "digest": str}')
        return result["model"], result["digest"]

    def topology_stats(self, name: str) -> dict[str, Any]:
        """Windowed metrics of topology ``name`` (shape: ``streamgale.nimbus.metrics``)."""
        return self._expect(dict, TopologyStats, name)

    def set_log_level(self, name: str, logger: str, level: str = "", timeout: float | None = None,
                      reset: bool = False) -> None:
        """Set ``logger``'s level (for ``timeout`` s, if given), or with ``reset`` put it back."""
        self._call(SetLogLevel, name, logger, level, timeout, reset)

    def topology_config(self, name: str) -> dict[str, Any]:
        """``{"config": {key: value}, "topology_keys": [...]}``: what topology ``name``'s workers run with."""
        result = self._expect(dict, TopologyConfig, name)
        if not isinstance(result.get("config"), dict) or not isinstance(result.get("topology_keys"), list):
            raise self._malformed("topology_config", result, '{"config": map, "topology_keys": list}')
        return result

    def read_log(self, topology_id: str, port: int, offset: int = -1, max_bytes: int = 65536) -> dict[str, Any]:
        """From a supervisor's log endpoint: ``{"data", "offset" (where to read next), "size"}``."""
        return self._expect(dict, ReadLog, topology_id, port, offset, max_bytes)

    def report(self, supervisor_id: str, heartbeats: list[dict[str, Any]], metrics: list[dict[str, Any]],
               errors: list[dict[str, Any]], counters: dict[str, int] | None = None) -> None:
        """A supervisor's per-second report to the leader (see :class:`SupervisorReport`)."""
        self._expect(dict, SupervisorReport, supervisor_id, heartbeats, metrics, errors, counters)

    def ping(self) -> Any:
        """The answering nimbus's ``{"address", "leader"}``; any nimbus answers, standbys too."""
        return self._call(Ping)

    def close(self) -> None:
        """Close the socket (idempotent). The client reopens one if called again."""
        if self._socket is not None:
            if self._monitor is not None:
                if not self._socket.closed:  # the context's owner may have destroyed it already
                    self._socket.disable_monitor()
                self._monitor.close()
                self._monitor = None
            self._socket.close(linger=0)
            self._socket = None
            self._socket_address = None

    def __enter__(self) -> NimbusClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _expect(self, kind: type, request_class: type[Request], *args: Any) -> Any:
        result = self._call(request_class, *args)
        if not isinstance(result, kind):
            raise self._malformed(request_class.OP, result, kind.__name__)
        return result

    def _malformed(self, op: str, result: Any, expected: str) -> NimbusError:
        return NimbusError(f"nimbus at {self._socket_address or self._preferred} answered '{op}' with "
                           f"{str(result)[:80]!r}; expected {expected}", type=INTERNAL)

    def _call(self, request_class: type[Request], *args: Any) -> Any:
        """Build the request (a bad argument raises BadRequest here), send it, return the result."""
        try:
            request = request_class(*args)
        except ProtocolError as e:
            raise BadRequest(str(e)) from None
        order = [self._preferred] + [a for a in self.addresses if a != self._preferred]
        failures: list[str] = []
        for address in order:
            try:
                ok, payload = self._exchange(address, request)
            except _NoAnswer as e:
                failures.append(str(e))
                continue
            self._preferred = address
            leader = _leader_named(payload) if not ok else None
            if leader is not None:
                try:
                    ok, payload = self._exchange(leader, request)
                except _NoAnswer as e:
                    raise NimbusUnavailable(f"nimbus at {address} says the leader is {leader}, but {e}") from None
                self._preferred = leader
            if ok:
                return payload
            raise error_from_reply(payload)
        hint = "is `streamgale nimbus` running there?"
        if len(failures) == 1:
            raise NimbusUnavailable(f"{failures[0]}; {hint}")
        raise NimbusUnavailable(f"cannot reach any nimbus ({'; '.join(failures)}); {hint}")

    def _exchange(self, address: str, request: Request) -> tuple[bool, Any]:
        """Send one request to ``address`` and wait for its reply until the deadline."""
        request_id = next(self._ids)
        frame = replace(request, request_id=request_id).encode()
        if len(frame) > self.max_message_bytes:
            raise BadRequest(f"the {request.OP} request is {len(frame)} bytes; the limit is "
                             f"{self.max_message_bytes}")
        deadline = time.monotonic() + self.timeout
        socket = self._socket_for(address)
        # IMMEDIATE: the socket becomes writable only once a ZMTP peer is connected, so
        # "nobody there" and "there but silent" can be told apart.
        if not self._wait(socket, zmq.POLLOUT, deadline, address):
            self.close()
            raise _NoAnswer(f"cannot reach nimbus at {address} within {self.timeout:g} s")
        socket.send(frame, zmq.NOBLOCK, copy=len(frame) < 65536)
        while True:
            if not self._wait(socket, zmq.POLLIN, deadline, address):
                self.close()  # a late reply must not be read by the next call
                raise _NoAnswer(f"nimbus at {address} accepted the connection but did not answer "
                                f"'{request.OP}' within {self.timeout:g} s")
            reply = socket.recv(zmq.NOBLOCK)
            try:
                reply_id, ok, payload = decode_response(reply, self.max_message_bytes)
            except ProtocolError as e:
                if e.request_id != request_id:
                    log.warning("discarded an unreadable reply from nimbus at %s: %s", address, e)
                    continue
                self.close()
                raise NimbusError(f"nimbus at {address} sent a malformed reply: {e}", type=INTERNAL) from None
            if reply_id == request_id:
                return ok, payload
            log.debug("discarded a stale reply (id %d, waiting for %d) from %s", reply_id, request_id, address)

    def _socket_for(self, address: str) -> zmq.Socket:
        if self._socket is not None and self._socket_address == address:
            return self._socket
        self.close()
        socket = self._context.socket(zmq.DEALER)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.IMMEDIATE, 1)
            socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            self.security.connect(socket)
            # Handshake failures are watched with security on or off: a client without a key
            # that reaches a secured nimbus is told so, not left to time out.
            self._monitor = HandshakeMonitor(socket)
            socket.connect(f"tcp://{address}")
        except (zmq.ZMQError, KeyFileError) as e:
            if self._monitor is not None:
                socket.disable_monitor()
                self._monitor.close()
                self._monitor = None
            socket.close(linger=0)
            raise NimbusUnavailable(f"cannot connect to nimbus at {address}: {e}") from None
        self._socket, self._socket_address = socket, address
        return socket

    def _wait(self, socket: zmq.Socket, event: int, deadline: float, address: str) -> bool:
        """Wait for ``event`` until ``deadline``; a refused handshake raises :class:`Unauthenticated`
        (at once when the peer said why; when it only closed mid-handshake, on the second time or
        at the deadline, as one close may be a daemon going away)."""
        poller = zmq.Poller()
        poller.register(socket, event)
        monitor = self._monitor
        if monitor is not None:
            poller.register(monitor.socket, zmq.POLLIN)
        broken_off: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if broken_off:
                    self.close()
                    raise Unauthenticated(broken_off[-1])
                return False
            ready = dict(poller.poll(math.ceil(remaining * 1000)))
            if monitor is not None and monitor.socket in ready:
                for kind, value in monitor.events():
                    text = self.security.handshake_failure(kind, value, f"nimbus at {address}")
                    if text is None:
                        continue
                    broken_off.append(text)
                    if self.security.conclusive(kind) or len(broken_off) >= 2:
                        self.close()
                        raise Unauthenticated(text)
            if socket in ready:
                return True

