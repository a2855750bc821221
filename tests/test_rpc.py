"""Nimbus's client API: protocol messages (pure) and the ROUTER/DEALER plumbing over real sockets."""

from __future__ import annotations

import queue
import random
import socket
import threading
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import zmq
from conftest import wait_for
from zmq.utils.monitor import recv_monitor_message

from streamgale.dev.ports import free_port
from streamgale.wire import protocol as p
from streamgale.wire.rpc import (
    AlreadyExists,
    BadRequest,
    InvalidTopology,
    NimbusClient,
    NimbusError,
    NimbusUnavailable,
    NotFound,
    NotLeader,
    RpcServer,
)

pytestmark = pytest.mark.timeout(60)

SPEC = {"components": {"words": {"kind": "spout", "parallelism": 2, "tasks": 2}}}


# -- protocol, without sockets ---------------------------------------------------------------------

ALL_REQUESTS = [
    p.Submit("wc", SPEC, {"topology.workers": 2}, "word_count.py", b"\x00PK\xff" * 10, "sha256:ab"),
    p.Kill("wc", 10.5),
    p.Kill("wc"),
    p.Activate("wc"),
    p.Deactivate("wc"),
    p.Rebalance("wc", 0, 4, {"count": 8}),
    p.Rebalance("wc"),
    p.ListTopologies(),
    p.TopologyInfo("wc"),
    p.ClusterInfo(),
    p.DownloadCode("wc-1700000000"),
    p.Ping(),
    p.ReadLog("wc-1700000000", 6700, 1024, 4096),
    p.ReadLog("wc-1700000000", 6700),
    p.SetLogLevel("wc", "streamgale.transport", "DEBUG"),
    p.SetLogLevel("wc", "", "info", 30),
    p.SetLogLevel("wc", "streamgale.transport", reset=True),
    p.TopologyConfig("wc"),
]


def test_set_log_level_sends_its_timeout_and_reset_only_when_given():
    """So a nimbus older than those fields still takes a plain set-log-level."""
    assert p.SetLogLevel("wc", "x", "debug").args() == {"name": "wc", "logger": "x", "level": "DEBUG"}
    assert p.SetLogLevel("wc", "x", "DEBUG", 30).args() == {"name": "wc", "logger": "x", "level": "DEBUG",
                                                            "timeout": 30.0}
    assert p.SetLogLevel("wc", "x", reset=True).args() == {"name": "wc", "logger": "x", "level": "",
                                                           "reset": True}
    old = p.decode_request(msgpack.packb({"v": 1, "id": 1, "op": "set_log_level",
                                          "args": {"name": "wc", "logger": "x", "level": "WARNING"}}))
    assert old == p.SetLogLevel("wc", "x", "WARNING", None, False)
    with pytest.raises(p.ProtocolError, match="set_log_level: field 'reset' must be true or false, got str 'yes'"):
        p.SetLogLevel("wc", "x", reset="yes")
    with pytest.raises(p.ProtocolError, match="set_log_level: field 'timeout' must be a number of seconds >= 0"):
        p.SetLogLevel("wc", "x", "DEBUG", -1)


@pytest.mark.parametrize("request_", ALL_REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_round_trips(request_):
    decoded = p.decode_request(request_.encode(request_id=41))
    assert decoded == request_ and type(decoded) is type(request_)
    assert decoded.request_id == 41
    for name in request_.args():
        assert type(getattr(decoded, name)) is type(getattr(request_, name)), name  # typed fields stay typed


def test_fields_are_normalised_and_code_is_kept_out_of_repr():
    assert p.Kill("wc", 10).wait == 10.0 and isinstance(p.Kill("wc", 10).wait, float)
    assert p.Rebalance("wc", parallelism=None).parallelism == {}
    sub = p.Submit("wc", SPEC, {}, "t.py", bytearray(b"secret-code"), "d")
    assert sub.code == b"secret-code" and type(sub.code) is bytes
    assert "secret-code" not in repr(sub)


@pytest.mark.parametrize("op, args, field, expected", [
    ("kill", {"name": 3}, "name", "a string"),
    ("kill", {"name": "wc", "wait": "soon"}, "wait", "a number of seconds"),
    ("kill", {"name": "wc", "wait": -1}, "wait", "a number of seconds >= 0"),
    ("kill", {"name": "wc", "wait": True}, "wait", "a number of seconds"),
    ("rebalance", {"name": "wc", "workers": 2.5}, "workers", "an integer >= 1"),
    ("rebalance", {"name": "wc", "parallelism": {"count": "8"}}, "parallelism", "a map of component name"),
    ("rebalance", {"name": "wc", "parallelism": [1]}, "parallelism", "a map of component name"),
    ("submit", {"name": "wc", "spec": [], "config": {}, "entry": "t.py", "code": b"", "code_digest": "d"},
     "spec", "a map with string keys"),
    ("submit", {"name": "wc", "spec": SPEC, "config": {}, "entry": "t.py", "code": "text", "code_digest": "d"},
     "code", "bytes"),
    ("submit", {"name": "wc", "spec": {"components": {"w": {"kind": "stream"}}}, "config": {}, "entry": "t.py",
                "code": b"", "code_digest": "d"},
     "spec", "a topology spec (component 'w' must have kind 'spout' or 'bolt', got 'stream')"),
    ("download_code", {"topology_id": None}, "topology_id", "a string"),
    ("read_log", {"topology_id": "wc-1", "port": -5}, "port", "an integer port 1-65535, got int -5"),
    ("read_log", {"topology_id": "wc-1", "port": 0}, "port", "an integer port 1-65535, got int 0"),
    ("read_log", {"topology_id": "wc-1", "port": 65536}, "port", "an integer port 1-65535, got int 65536"),
    ("read_log", {"topology_id": "wc-1", "port": "6700"}, "port", "an integer port 1-65535, got str '6700'"),
    ("read_log", {"topology_id": "wc-1", "port": True}, "port", "an integer port 1-65535, got bool True"),
    ("read_log", {"topology_id": "wc-1", "port": 6700, "offset": -2}, "offset",
     "an integer byte offset >= 0, or -1 (from the end), got int -2"),
    ("read_log", {"topology_id": "wc-1", "port": 6700, "offset": 1.5}, "offset", "an integer byte offset"),
    ("read_log", {"topology_id": "wc-1", "port": 6700, "max_bytes": 0}, "max_bytes",
     "an integer number of bytes >= 1, got int 0"),
    ("read_log", {"topology_id": "wc-1", "port": 6700, "max_bytes": -1}, "max_bytes",
     "an integer number of bytes >= 1, got int -1"),
])
def test_wrong_field_types_name_the_field(op, args, field, expected):
    frame = msgpack.packb({"v": 1, "id": 7, "op": op, "args": args}, use_bin_type=True)
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(frame)
    assert f"{op}: field '{field}' must be {expected}" in str(info.value)
    assert info.value.request_id == 7


@pytest.mark.parametrize("obj, message, request_id", [
    ({"v": 1, "id": 7, "op": "frobnicate"}, "unknown op 'frobnicate' (known: activate, cluster_info,", 7),
    ({"v": 1, "id": 7, "op": 5}, "unknown op 5", 7),
    ({"v": 2, "id": 7, "op": "ping"}, "protocol version 2; supported version(s): 1", 7),
    ({"id": 7, "op": "ping"}, "protocol version None; supported version(s): 1", 7),
    ({"v": 1, "id": 7, "op": "kill", "args": {}}, "kill: missing field 'name'", 7),
    ({"v": 1, "id": 7, "op": "kill", "args": {"name": "wc", "force": 1}}, "unexpected field(s) 'force'", 7),
    ({"v": 1, "id": 7, "op": "ping", "args": [1]}, "ping: 'args' must be a map", 7),
    ({"v": 1, "op": "ping"}, "request has no valid 'id'", None),
    ({"v": 1, "id": "7", "op": "ping"}, "request has no valid 'id'", None),
    ({"v": 1, "id": -1, "op": "ping"}, "request has no valid 'id'", None),
    ([1, 2, 3], "request must be a map, got list", None),
])
def test_bad_envelopes(obj, message, request_id):
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(msgpack.packb(obj, use_bin_type=True))
    assert message in str(info.value)
    assert info.value.request_id == request_id


@pytest.mark.parametrize("frame", [b"", b"\xc1", random.Random(3).randbytes(64), b"\x91" * 100_000, b"\x81\xa1a",
                                   msgpack.packb(msgpack.ExtType(5, b"x")), b"\xa2\xff\xfe"])
def test_undecodable_frames_raise_protocol_error(frame):
    with pytest.raises(p.ProtocolError):
        p.decode_request(frame)


def test_decode_request_enforces_the_size_limit():
    frame = p.Ping().encode(1)
    assert p.decode_request(frame, max_bytes=len(frame)) == p.Ping()
    with pytest.raises(p.ProtocolError, match=f"request is {len(frame)} bytes; the limit is {len(frame) - 1}"):
        p.decode_request(frame, max_bytes=len(frame) - 1)


def test_constructing_a_bad_request_fails_before_anything_is_sent():
    with pytest.raises(p.ProtocolError, match="kill: field 'name' must be a string, got int 3"):
        p.Kill(3)


def test_read_log_checks_its_port_apart_from_its_offsets():
    with pytest.raises(p.ProtocolError) as info:
        p.ReadLog("wc-1", -5)
    assert str(info.value) == "read_log: field 'port' must be an integer port 1-65535, got int -5"
    for port in (1, 65535):
        assert p.ReadLog("wc-1", port).port == port
    assert p.ReadLog("wc-1", 6700).offset == -1  # -1: the end of the log
    assert p.ReadLog("wc-1", 6700, offset=0, max_bytes=1).max_bytes == 1


def test_responses_round_trip():
    assert p.decode_response(p.encode_response(9, {"topology_id": "wc-1"})) == (9, True, {"topology_id": "wc-1"})
    assert p.decode_response(p.encode_response(9, None)) == (9, True, None)
    rid, ok, error = p.decode_response(p.encode_error(9, "NotLeader", "standby", "n1:6627"))
    assert (rid, ok, error) == (9, False, {"type": "NotLeader", "message": "standby", "leader": "n1:6627"})
    exc = p.error_from_reply(error)
    assert isinstance(exc, NotLeader) and str(exc) == "standby" and exc.leader == "n1:6627"
    assert p.decode_response(p.encode_exception(3, NotFound("no 'wc'")))[2]["type"] == "NotFound"
    with pytest.raises(ValueError, match="unknown error type 'Oops'"):
        p.encode_error(9, "Oops", "x")


@pytest.mark.parametrize("obj, message, request_id", [
    ({"v": 1, "id": 4, "ok": "yes"}, "field 'ok' must be a boolean", 4),
    ({"v": 1, "id": 4, "ok": True}, "'result' is missing", 4),
    ({"v": 1, "id": 4, "ok": False, "error": {"type": "NotFound", "message": 3}}, "field 'error.message'", 4),
    ({"v": 1, "id": 4, "ok": False, "error": "bad"}, "field 'error' must be a map", 4),
    ({"v": 9, "id": 4, "ok": True, "result": 1}, "response has protocol version 9", 4),
    ("hello", "response must be a map", None),
])
def test_bad_responses(obj, message, request_id):
    with pytest.raises(p.ProtocolError) as info:
        p.decode_response(msgpack.packb(obj))
    assert message in str(info.value) and info.value.request_id == request_id


def test_unknown_error_types_from_a_newer_server_become_nimbus_error():
    exc = p.error_from_reply({"type": "QuotaExceeded", "message": "too many", "leader": None})
    assert type(exc) is NimbusError and exc.type == "QuotaExceeded" and str(exc) == "too many"


# -- sockets --------------------------------------------------------------------------------------


class Frames(list):
    """Returned by a handler: send these raw frames instead of a normal reply."""


def canned(req: p.Request) -> Any:
    """What a healthy leader would answer, op by op."""
    if isinstance(req, p.Submit):
        return {"topology_id": f"{req.name}-1700000000"}
    if isinstance(req, p.ListTopologies):
        return [{"name": "wc", "id": "wc-1", "status": "ACTIVE", "workers": 2, "executors": 5, "tasks": 8,
                 "uptime": 1.5}]
    if isinstance(req, p.TopologyInfo):
        return {"topology": {"name": req.name}, "assignment": None, "errors": {}}
    if isinstance(req, p.ClusterInfo):
        return {"leader": "127.0.0.1:6627", "nimbuses": ["127.0.0.1:6627"], "supervisors": [], "topologies": 1}
    if isinstance(req, p.DownloadCode):
        return {"code": b"\x00PK\xff", "digest": f"digest-of-{req.topology_id}"}
    if isinstance(req, p.Ping):
        return {"address": "127.0.0.1:6627", "leader": True}
    if isinstance(req, p.TopologyConfig):
        return {"config": {"topology.workers": 2}, "topology_keys": ["topology.workers"]}
    return {}


class FakeNimbus:
    """An RpcServer served by its own thread (which creates, polls and closes it), answering with ``handler``."""

    def __init__(self, context: zmq.Context, port: int = 0, handler: Callable[[p.Request], Any] = canned,
                 max_message_bytes: int = p.MAX_MESSAGE_BYTES):
        self.context, self.port, self.handler, self.max_message_bytes = context, port, handler, max_message_bytes
        self.received: queue.Queue[p.Request] = queue.Queue()
        self.server: RpcServer | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-nimbus", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeNimbus:
        self._thread.start()
        assert self._ready.wait(10), "fake nimbus did not start"
        if self.error:
            raise self.error
        return self

    def _run(self) -> None:
        try:
            self.server = RpcServer(self.context, "127.0.0.1", self.port, self.max_message_bytes)
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self.error = e
            self._ready.set()
            return
        self.port = self.server.port
        self._ready.set()
        try:
            while not self._stop.is_set():
                for identity, req, _user in self.server.poll(0.02):
                    self.received.put(req)
                    try:
                        answer = self.handler(req)
                        frames = answer if isinstance(answer, Frames) else [p.encode_response(req.request_id, answer)]
                    except NimbusError as e:
                        frames = [p.encode_exception(req.request_id, e)]
                    for frame in frames:
                        self.server.reply(identity, frame)
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.error = e
        finally:
            self.server.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "fake nimbus thread did not stop"
        if self.error:
            raise self.error

    def requests(self) -> list[p.Request]:
        out = []
        while not self.received.empty():
            out.append(self.received.get_nowait())
        return out


@pytest.fixture
def context():
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)  # every thread using it has been joined by now


@pytest.fixture
def nimbus_factory(context):
    started: list[FakeNimbus] = []

    def start(**kwargs: Any) -> FakeNimbus:
        fake = FakeNimbus(context, **kwargs)
        started.append(fake)
        return fake.start()

    try:
        yield start
    finally:
        for fake in started:
            fake.stop()


@pytest.fixture
def nimbus(nimbus_factory):
    return nimbus_factory()


@pytest.fixture
def client_factory(context):
    clients: list[NimbusClient] = []

    def make(address: Any, timeout: float = 5.0) -> NimbusClient:
        c = NimbusClient(address, timeout=timeout, context=context)
        clients.append(c)
        return c

    try:
        yield make
    finally:
        for c in clients:
            c.close()


@pytest.fixture
def raw_dealer(context):
    sockets: list[zmq.Socket] = []

    def make(port: int) -> zmq.Socket:
        s = context.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        sockets.append(s)
        s.connect(f"tcp://127.0.0.1:{port}")
        return s

    try:
        yield make
    finally:
        for s in sockets:
            s.close(linger=0)


def recv_within(sock: zmq.Socket, timeout: float = 5.0) -> bytes:
    assert sock.poll(int(timeout * 1000), zmq.POLLIN), f"no reply within {timeout} s"
    return sock.recv()


def test_every_op_round_trips_with_typed_fields(nimbus, client_factory):
    client = client_factory(nimbus.address)
    code = bytes(range(256)) * 4
    assert client.submit("wc", SPEC, {"topology.workers": 2}, "word_count.py", code, "d1") == "wc-1700000000"
    assert client.kill("wc", wait=3) is None
    client.kill("wc")
    client.activate("wc")
    client.deactivate("wc")
    client.rebalance("wc", wait=0, workers=4, parallelism={"count": 8})
    client.rebalance("wc")
    assert client.list_topologies()[0]["name"] == "wc"
    assert client.topology_info("wc") == {"topology": {"name": "wc"}, "assignment": None, "errors": {}}
    assert client.cluster_info()["topologies"] == 1
    assert client.download_code("wc-1") == (b"\x00PK\xff", "digest-of-wc-1")
    assert client.ping() == {"address": "127.0.0.1:6627", "leader": True}
    client.set_log_level("wc", "x", "DEBUG", timeout=5)
    client.set_log_level("wc", "x", reset=True)
    assert client.topology_config("wc") == {"config": {"topology.workers": 2}, "topology_keys": ["topology.workers"]}

    got = nimbus.requests()
    assert got == [
        p.Submit("wc", SPEC, {"topology.workers": 2}, "word_count.py", code, "d1"),
        p.Kill("wc", 3.0), p.Kill("wc", None), p.Activate("wc"), p.Deactivate("wc"),
        p.Rebalance("wc", 0.0, 4, {"count": 8}), p.Rebalance("wc", None, None, {}),
        p.ListTopologies(), p.TopologyInfo("wc"), p.ClusterInfo(), p.DownloadCode("wc-1"), p.Ping(),
        p.SetLogLevel("wc", "x", "DEBUG", 5.0), p.SetLogLevel("wc", "x", reset=True), p.TopologyConfig("wc"),
    ]
    assert type(got[0].code) is bytes and type(got[1].wait) is float
    ids = [r.request_id for r in got]
    assert len(set(ids)) == len(ids), "request ids are unique per client"


@pytest.mark.parametrize("exc_class, type_", [
    (NotFound, "NotFound"), (AlreadyExists, "AlreadyExists"), (InvalidTopology, "InvalidTopology"),
    (BadRequest, "BadRequest"), (NotLeader, "NotLeader"), (NimbusUnavailable, "Unavailable"),
    (NimbusError, "Internal"),
])
def test_server_errors_map_to_exceptions_with_the_servers_message(nimbus_factory, client_factory, exc_class, type_):
    message = "no topology named 'wc' is running (see `streamgale list`)"

    def fail(req):
        raise exc_class(message)

    client = client_factory(nimbus_factory(handler=fail).address)
    with pytest.raises(exc_class) as info:
        client.kill("wc")
    assert type(info.value) is exc_class
    assert str(info.value) == message and info.value.type == type_


def test_times_out_when_nothing_listens_then_works_when_a_server_appears(nimbus_factory, client_factory):
    port = free_port()
    client = client_factory(f"127.0.0.1:{port}", timeout=0.5)
    with pytest.raises(NimbusUnavailable) as info:
        client.list_topologies()
    assert str(info.value) == (f"cannot reach nimbus at 127.0.0.1:{port} within 0.5 s; "
                               "is `streamgale nimbus` running there?")
    assert info.value.type == "Unavailable"

    nimbus_factory(port=port)
    assert client.list_topologies()[0]["name"] == "wc"


def test_a_tcp_listener_that_does_not_speak_zmtp_is_unreachable(client_factory):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = client_factory(f"127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
        with pytest.raises(NimbusUnavailable, match="cannot reach nimbus at"):
            client.ping()


def test_a_silent_server_times_out_and_its_late_reply_does_not_leak_into_the_next_call(
        nimbus_factory, client_factory):
    release = threading.Event()
    calls = []

    def hang_first(req):
        calls.append(req)
        if len(calls) == 1:
            release.wait(10)
            return {"address": "late", "leader": True}
        return canned(req)

    fake = nimbus_factory(handler=hang_first)
    client = client_factory(fake.address, timeout=0.3)
    with pytest.raises(NimbusUnavailable, match="accepted the connection but did not answer 'ping' within 0.3 s"):
        client.ping()
    release.set()
    assert client.ping() == {"address": "127.0.0.1:6627", "leader": True}


def test_stale_and_unreadable_replies_are_discarded(nimbus_factory, client_factory):
    def noisy(req):
        return Frames([p.encode_response(req.request_id + 1000, "someone else's"), b"\xc1garbage",
                       p.encode_response(req.request_id, {"address": "a", "leader": False})])

    client = client_factory(nimbus_factory(handler=noisy).address)
    assert client.ping() == {"address": "a", "leader": False}


def test_malformed_reply_to_our_request_is_an_internal_error(nimbus_factory, client_factory):
    fake = nimbus_factory(handler=lambda req: Frames([msgpack.packb({"v": 1, "id": req.request_id, "ok": 3})]))
    with pytest.raises(NimbusError, match="sent a malformed reply: response: field 'ok' must be a boolean"):
        client_factory(fake.address).ping()


def test_wrong_result_shape_is_an_internal_error(nimbus_factory, client_factory):
    client = client_factory(nimbus_factory(handler=lambda req: {"id": 3}).address)
    with pytest.raises(NimbusError, match="answered 'submit' with .*expected"):
        client.submit("wc", SPEC, {}, "t.py", b"", "d")


def test_not_leader_redirects_once_to_the_leader(nimbus_factory, client_factory):
    leader = nimbus_factory()

    def standby_handler(req):
        raise NotLeader("nimbus 127.0.0.1:x is a standby", leader=leader.address)

    standby = nimbus_factory(handler=standby_handler)
    client = client_factory(standby.address)
    assert client.submit("wc", SPEC, {}, "t.py", b"code", "d") == "wc-1700000000"
    assert [type(r) for r in standby.requests()] == [p.Submit]
    assert [type(r) for r in leader.requests()] == [p.Submit]
    client.kill("wc")  # the leader is remembered
    assert standby.requests() == [] and leader.requests() == [p.Kill("wc")]


@pytest.mark.parametrize("leader", [None, "not an address"])
def test_not_leader_without_a_usable_leader_is_raised(nimbus_factory, client_factory, leader):
    def no_leader(req):
        raise NotLeader("no nimbus leads right now; retry in a few seconds", leader=leader)

    fake = nimbus_factory(handler=no_leader)
    with pytest.raises(NotLeader, match="no nimbus leads right now") as info:
        client_factory(fake.address).kill("wc")
    assert info.value.leader == leader
    assert len(fake.requests()) == 1


def test_redirect_chains_are_not_followed(nimbus_factory, client_factory):
    peers: dict[str, str] = {}

    def redirect_to(name):
        def handler(req):
            raise NotLeader(f"ask {name}", leader=peers[name])
        return handler

    a = nimbus_factory(handler=redirect_to("b"))
    b = nimbus_factory(handler=redirect_to("a"))
    peers.update(a=a.address, b=b.address)
    with pytest.raises(NotLeader, match="ask a"):
        client_factory(a.address).kill("wc")
    assert len(a.requests()) == 1 and len(b.requests()) == 1


def test_several_addresses_are_tried_in_turn(nimbus_factory, client_factory):
    dead_port = free_port()
    live = nimbus_factory()
    client = client_factory([f"127.0.0.1:{dead_port}", live.address], timeout=1.0)
    assert client.ping()["leader"] is True
    assert [type(r) for r in live.requests()] == [p.Ping]
    # The first address comes to life; the next call still goes straight to the one that answered.
    revived = nimbus_factory(port=dead_port)
    assert client.ping()["leader"] is True
    assert [type(r) for r in live.requests()] == [p.Ping]
    assert revived.requests() == []


def test_all_addresses_unreachable_lists_them(client_factory):
    dead = [f"127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"]
    with pytest.raises(NimbusUnavailable) as info:
        client_factory(dead, timeout=0.2).ping()
    text = str(info.value)
    assert text.startswith("cannot reach any nimbus (cannot reach nimbus at 127.0.0.1:")
    assert dead[1].removeprefix("tcp://") in text and text.endswith("is `streamgale nimbus` running there?")


def test_bad_addresses_are_rejected():
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        NimbusClient("nimbus1")
    with pytest.raises(ValueError, match="no nimbus address"):
        NimbusClient([])


def assert_still_serving(nimbus: FakeNimbus, client_factory) -> None:
    assert client_factory(nimbus.address).ping()["leader"] is True
    assert [type(r) for r in nimbus.requests()] == [p.Ping]


GARBAGE_WITHOUT_ID = [
    pytest.param([random.Random(7).randbytes(300)], id="random-bytes"),
    pytest.param([b"\x91" * 50_000], id="deep-nesting"),
    pytest.param([msgpack.packb([1, 2, 3])], id="msgpack-non-dict"),
    pytest.param([msgpack.packb({"v": 1, "op": "ping"})], id="no-id"),
    pytest.param([p.Ping().encode(5), b"extra frame"], id="two-frames"),
    pytest.param([b""], id="empty"),
]


@pytest.mark.parametrize("frames", GARBAGE_WITHOUT_ID)
def test_garbage_without_a_request_id_is_dropped(nimbus, raw_dealer, client_factory, frames):
    raw_dealer(nimbus.port).send_multipart(frames)
    wait_for(lambda: nimbus.server.rejected == 1, timeout=5, message="the server to reject the frame")
    assert_still_serving(nimbus, client_factory)


@pytest.mark.parametrize("obj, message", [
    ({"v": 1, "id": 11, "op": "frobnicate", "args": {}}, "unknown op 'frobnicate' (known: activate,"),
    ({"v": 1, "id": 11, "op": "kill", "args": {"name": ["wc"]}}, "kill: field 'name' must be a string, got list"),
    ({"v": 1, "id": 11, "op": "rebalance", "args": {"name": "wc", "workers": "4"}},
     "rebalance: field 'workers' must be an integer >= 1, or None, got str '4'"),
    ({"v": 7, "id": 11, "op": "ping", "args": {}}, "protocol version 7; supported version(s): 1"),
])
def test_garbage_with_a_request_id_gets_bad_request(nimbus, raw_dealer, client_factory, obj, message):
    dealer = raw_dealer(nimbus.port)
    dealer.send(msgpack.packb(obj, use_bin_type=True))
    rid, ok, error = p.decode_response(recv_within(dealer))
    assert (rid, ok, error["type"]) == (11, False, "BadRequest")
    assert message in error["message"]
    assert nimbus.server.rejected == 1 and nimbus.requests() == []
    assert_still_serving(nimbus, client_factory)


def test_oversized_frames_are_dropped_by_zeromq(nimbus_factory, raw_dealer, client_factory):
    nimbus = nimbus_factory(max_message_bytes=1024)
    dealer = raw_dealer(nimbus.port)
    monitor = dealer.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    try:
        dealer.send(p.Submit("wc", SPEC, {}, "t.py", b"x" * 4096, "d").encode(12))
        events = []
        while zmq.EVENT_DISCONNECTED not in events:  # the server hangs up on a frame over the limit
            assert monitor.poll(5000), f"no disconnect seen (events: {events})"
            events.append(recv_monitor_message(monitor)["event"])
    finally:
        dealer.disable_monitor()
        monitor.close(linger=0)
    assert_still_serving(nimbus, client_factory)


def test_a_raw_tcp_client_writing_random_bytes_does_not_hurt(nimbus, client_factory):
    rng = random.Random(1234)
    with socket.create_connection(("127.0.0.1", nimbus.port), timeout=5) as idle, \
            socket.create_connection(("127.0.0.1", nimbus.port), timeout=5) as noisy:
        idle.sendall(b"\xff\x00\x00")  # the start of a ZMTP greeting, then silence
        try:
            noisy.sendall(bytes(rng.randrange(256) for _ in range(64 * 1024)))
            while noisy.recv(4096):  # ZeroMQ sends its greeting, then hangs up on the garbage
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        assert_still_serving(nimbus, client_factory)  # with the half-open connection still there
    assert_still_serving(nimbus, client_factory)


def test_client_refuses_a_request_over_its_own_limit(nimbus, context):
    with NimbusClient(nimbus.address, context=context, max_message_bytes=1000) as client:
        with pytest.raises(BadRequest, match="the submit request is .* bytes; the limit is 1000"):
            client.submit("wc", SPEC, {}, "t.py", b"x" * 2000, "d")
        assert client.ping()["leader"] is True


def test_server_reports_an_address_in_use(nimbus, context):
    with pytest.raises(OSError, match=f"cannot listen on tcp://127.0.0.1:{nimbus.port}"):
        RpcServer(context, "127.0.0.1", nimbus.port)


def test_poll_returns_nothing_after_its_timeout(context):
    with RpcServer(context, "127.0.0.1", 0) as server:
        assert server.poll(0) == []
        assert server.poll(0.05) == []
    assert server.closed


def test_bad_arguments_raise_bad_request_before_anything_is_sent(nimbus, client_factory):
    client = client_factory(nimbus.address)
    with pytest.raises(BadRequest, match="rebalance: field 'parallelism' must be a map of component name to an "
                                         "integer >= 1, got dict {'count': 0}"):
        client.rebalance("wc", parallelism={"count": 0})
    with pytest.raises(BadRequest, match="kill: field 'wait' must be a number of seconds >= 0"):
        client.kill("wc", wait=-5)
    with pytest.raises(BadRequest, match="read_log: field 'port' must be an integer port 1-65535, got int -5"):
        client.read_log("wc-1", -5)
    assert_still_serving(nimbus, client_factory)
