"""Security (docs/security.md): keys, roles, CURVE on the sockets, ZooKeeper ACLs.

The fast tests run real ZeroMQ sockets in-process; the slow ones start a real
secured cluster through the CLI and try it as an attacker and as each role would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
import zmq
from conftest import ROOT
from streamgale.worker.transport import Inbound, Transport

from streamgale.dev.polling import poll_until
from streamgale.security import KeyFileError, KeyStore, Principal, Security, refusal
from streamgale.security.keys import AuthorizedKeys
from streamgale.tuples import Tuple
from streamgale.wire import protocol as p
from streamgale.wire.rpc import NimbusClient, RpcServer

# -- who may do what (pure) ------------------------------------------------------------------------

ALICE = Principal("alice", "user")
RITA = Principal("rita", "reader")
ROOTY = Principal("root", "admin")
NODE = Principal("node1", "daemon")


def test_security_off_allows_everything():
    assert refusal(None, "kill", "wc", ()) is None
    assert refusal(None, "submit") is None


def test_readers_read_and_nothing_else():
    for op in ("list", "topology_info", "topology_config", "cluster_info", "topology_stats", "read_log", "ping"):
        assert refusal(RITA, op, "wc", {"alice"}) is None
    assert refusal(RITA, "kill", "wc", {"alice"}) == (
        "user 'rita' (role reader) may not kill topology 'wc': that needs role admin, or role user as an "
        "owner of the topology (owners: alice)")
    assert "needs role user or admin" in refusal(RITA, "submit")
    assert refusal(RITA, "download_code", "wc", {"alice"}) is not None


def test_users_submit_and_manage_only_their_own():
    assert refusal(ALICE, "submit") is None
    for op in ("kill", "activate", "deactivate", "rebalance", "set_log_level", "update_model", "download_code"):
        assert refusal(ALICE, op, "mine", {"alice"}) is None
        assert refusal(ALICE, op, "theirs", {"bob"}) is not None
    assert refusal(ALICE, "supervisor_report") is not None


def test_resetting_a_log_level_or_setting_one_for_a_while_is_the_same_action_as_setting_it():
    from streamgale.wire import protocol as p

    for request in (p.SetLogLevel("wc", "x", reset=True), p.SetLogLevel("wc", "x", "DEBUG", 30)):
        assert refusal(ALICE, request.OP, "wc", {"alice"}) is None
        assert "may not set_log_level topology 'wc'" in refusal(RITA, request.OP, "wc", {"alice"})


def test_admins_do_everything_daemons_only_what_nodes_need():
    for op in ("submit", "kill", "rebalance", "supervisor_report", "set_log_level"):
        assert refusal(ROOTY, op, "wc", {"alice"}) is None
    for op in ("supervisor_report", "download_code", "download_model", "cluster_info"):
        assert refusal(NODE, op, "wc", {"alice"}) is None
    for op in ("submit", "kill", "rebalance"):
        assert "user 'node1' (role daemon) may not" in refusal(NODE, op, "wc", {"alice"})


def test_a_revoked_key_keeps_no_role():
    assert "no longer authorized" in refusal(Principal("gone", "none"), "list")


# -- key files -------------------------------------------------------------------------------------

def test_keys_are_created_authorized_rotated_and_revoked(tmp_path):
    store = KeyStore(tmp_path / "keys")
    assert len(store.init()) == 2 and store.init() == []
    pair = store.create("alice", "user")
    assert store.authorized()[pair.public] == Principal("alice", "user")
    assert os.stat(store.dir / "alice.key_secret").st_mode & 0o777 == 0o600
    rotated = store.rotate("alice")
    assert rotated.public != pair.public
    assert store.authorized() == {rotated.public: Principal("alice", "user")}  # the old key is gone
    store.revoke("alice")
    assert store.authorized() == {}
    with pytest.raises(KeyFileError, match="a key named 'alice' exists"):
        store.create("alice")
    with pytest.raises(KeyFileError, match="must be 1-64 letters"):
        store.create("../etc")
    with pytest.raises(KeyFileError, match="role 'root' is not one of admin, user, reader, daemon"):
        store.authorize("alice", "root")


def test_a_secret_key_readable_by_others_is_refused(tmp_path):
    store = KeyStore(tmp_path)
    store.create("alice")
    os.chmod(tmp_path / "alice.key_secret", 0o644)
    with pytest.raises(KeyFileError, match=r"readable by others \(mode 644\); run `chmod 600"):
        store.pair("alice")


def test_authorized_keys_are_rescanned_when_the_folder_changes(tmp_path):
    now = [0.0]
    store = KeyStore(tmp_path)
    keys = AuthorizedKeys(store, interval=1.0, clock=lambda: now[0])
    pair = store.create("alice")
    assert keys.lookup(pair.public) is None
    store.authorize("alice", "reader")
    assert keys.lookup(pair.public) is None  # not rescanned within the interval
    now[0] = 1.0
    assert keys.lookup(pair.public) == Principal("alice", "reader")


# -- CURVE on real sockets -------------------------------------------------------------------------

@pytest.fixture
def keys(tmp_path):
    store = KeyStore(tmp_path / "keys")
    store.init()
    store.create("daemon", "daemon")
    store.create("rita", "reader")
    return store


class EchoServer:
    """An RpcServer (security on) in a thread, answering each ping with the caller's principal."""

    def __init__(self, security: Security):
        self.security = security
        self.context = zmq.Context()
        self.server = RpcServer(self.context, "127.0.0.1", 0, security=security)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def _run(self) -> None:
        while not self.stop.is_set():
            for identity, request, user in self.server.poll(0.05):
                principal = self.security.principal(user)
                self.server.reply(identity, p.encode_response(request.request_id, str(principal)))
        self.server.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.security.close()
        self.context.term()


@pytest.fixture
def echo(keys):
    server = EchoServer(Security(keys, "daemon"))
    yield server
    server.close()


def client_store(tmp_path: Path, keys: KeyStore, name: str, authorize: str | None = None) -> KeyStore:
    """A user's own keys directory: its pair and the cluster's public key."""
    store = KeyStore(tmp_path / f"user-{name}")
    store.create(name)
    (store.dir / "cluster.key").write_bytes((keys.dir / "cluster.key").read_bytes())
    if authorize:
        keys.authorize(name, authorize, store.pair(name).public)
    return store


def test_an_authorized_key_is_served_with_its_name_and_role(echo, keys, tmp_path):
    with NimbusClient(echo.address, timeout=5, security=Security(keys, "rita")) as client:
        assert client.ping() == "'rita' (role reader)"


def test_an_unknown_key_is_refused_at_the_handshake_with_a_clear_error(echo, keys, tmp_path, caplog):
    mallory = client_store(tmp_path, keys, "mallory")
    start = time.monotonic()
    with NimbusClient(echo.address, timeout=10, security=Security(mallory, "mallory")) as client:
        with pytest.raises(p.Unauthenticated, match=r"refused key 'mallory' \(.{12}\.\.\.\): it is not authorized"):
            client.ping()
    assert time.monotonic() - start < 5  # told at the handshake, not after the 10 s timeout
    poll_until(lambda: "refused a connection to the api socket: key" in caplog.text, 5, "the refusal logged")


def test_a_client_without_security_is_told_the_cluster_needs_it(echo):
    with NimbusClient(echo.address, timeout=10) as client:
        # The mismatch the daemon states, or (a race in libzmq) the handshake it broke off.
        with pytest.raises(p.Unauthenticated, match="requires CURVE security( does)?: set security.enabled: true"):
            client.ping()
    poll_until(lambda: echo.server.refused_handshakes >= 1, 5, "the refused handshake counted")


def test_a_client_without_security_is_told_even_when_the_daemon_closes_before_naming_curve():
    # A secured nimbus in another process often reads the client's whole greeting and closes
    # before its own greeting says CURVE: the client sees only a connection broken off.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"\xff" + b"\x00" * 8 + b"\x7f")  # a ZMTP signature, then nothing
                conn.recv(64)

    threading.Thread(target=serve, daemon=True).start()
    start = time.monotonic()
    try:
        with NimbusClient(f"127.0.0.1:{listener.getsockname()[1]}", timeout=10) as client:
            with pytest.raises(p.Unauthenticated, match="broke off the handshake, as a daemon that requires "
                                                         "CURVE security does: set security.enabled: true"):
                client.ping()
    finally:
        listener.close()
    assert time.monotonic() - start < 5  # on the second broken-off handshake, not at the timeout


def test_a_client_checks_the_cluster_key(echo, keys, tmp_path):
    impostor = KeyStore(tmp_path / "impostor")
    impostor.init()  # another cluster's key
    (impostor.dir / "rita.key_secret").write_bytes((keys.dir / "rita.key_secret").read_bytes())
    os.chmod(impostor.dir / "rita.key_secret", 0o600)
    with NimbusClient(echo.address, timeout=10, security=Security(impostor, "rita")) as client:
        with pytest.raises(p.Unauthenticated, match="did not prove the cluster key"):
            client.ping()


def test_a_missing_key_file_is_named_before_connecting(keys):
    with pytest.raises(p.Unauthenticated, match=r"no key file .*nobody.key_secret"):
        NimbusClient("127.0.0.1:1", security=Security(keys, "nobody"))


def test_a_revoked_key_is_refused_from_the_next_rescan(echo, keys):
    with NimbusClient(echo.address, timeout=5, security=Security(keys, "rita")) as client:
        assert client.ping() == "'rita' (role reader)"
    keys.revoke("rita")

    def refused() -> bool:
        with NimbusClient(echo.address, timeout=5, security=Security(keys, "rita")) as c:
            try:
                c.ping()
                return False
            except p.Unauthenticated:
                return True

    poll_until(refused, 10, "the revoked key refused")


def test_code_packages_are_signed_with_the_cluster_key(keys, tmp_path):
    signature = Security(keys, "daemon").sign("wc-1", "ab12")
    verifier = Security(keys, "daemon")
    assert verifier.verify("wc-1", "ab12", signature)
    for topology_id, digest, sig in (("wc-1", "ab13", signature), ("wc-2", "ab12", signature), ("wc-1", "ab12", "")):
        assert not verifier.verify(topology_id, digest, sig)
    other = KeyStore(tmp_path / "other")
    other.init()
    assert not Security(other, "daemon").verify("wc-1", "ab12", signature)
    assert Security.off().sign("wc-1", "ab12") == "" and Security.off().verify("wc-1", "ab12", "")


def _inbound(received: list) -> Inbound:
    return Inbound({7: received.append}, {7: "sink", 1: "spout"}, {"spout": {"default": {"word": 0}}})


def _send_word(transport: Transport, endpoint: str, word: str) -> None:
    transport.sink(7, endpoint)(Tuple([word], "default", "spout", 1, {"word": 0}))


def test_worker_transport_refuses_forged_tuples_and_encrypts_real_ones(keys, tmp_path):
    context = zmq.Context()
    security = Security(keys, "daemon")
    received: list = []
    inbound = Transport(context, 0, _inbound(received), security=security, bind_host="127.0.0.1")
    try:
        port = int(inbound.pull.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        forger = Transport(context, 0, _inbound([]), bind_host="127.0.0.1")  # no key: plaintext
        sender = Transport(context, 0, _inbound([]), security=security, bind_host="127.0.0.1")
        try:
            _send_word(forger, f"127.0.0.1:{port}", "forged")
            _send_word(sender, f"127.0.0.1:{port}", "real")

            def arrived() -> bool:
                for transport in (forger, sender, inbound):
                    transport.pump(True, False)
                return bool(received)

            poll_until(arrived, 10, "the authenticated sender's tuple")
            assert [t.values for t in received] == [["real"]]
        finally:
            forger.close()
            sender.close()
    finally:
        inbound.close()
        security.close()
        context.term()


# -- a real secured cluster ------------------------------------------------------------------------

TOPOLOGY = str(ROOT / "tests" / "topologies" / "cluster_word_count.py")
CLI = [str(ROOT / ".venv" / "bin" / "streamgale")]
CANARY = "nectarine"  # a word of the topology's sentences, which cross between its two workers


class LoopbackCapture:
    """Every TCP payload on the loopback interface between two ports sets (AF_PACKET; root only)."""

    def __init__(self, ports: set[int]):
        self.ports = ports
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.payload = bytearray()
        self.packets = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._take(*self.sock.recvfrom(65535))
            except TimeoutError:
                continue

    def _take(self, frame: bytes, address: tuple) -> None:
        if address[2] == socket.PACKET_OUTGOING:
            return  # loopback shows each packet twice
        ip = frame[14:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            return
        tcp = ip[(ip[0] & 15) * 4:]
        src, dst = int.from_bytes(tcp[0:2], "big"), int.from_bytes(tcp[2:4], "big")
        if src in self.ports or dst in self.ports:
            data = tcp[(tcp[12] >> 4) * 4:]
            if data:
                self.packets += 1
                self.payload += data

    def close(self) -> bytes:
        """Stop, then read what the kernel queued that the thread had not read yet (a race CI once lost)."""
        self.stop.set()
        self.thread.join(5)
        self.sock.setblocking(False)
        while True:
            try:
                self._take(*self.sock.recvfrom(65535))
            except BlockingIOError:
                break
        self.sock.close()
        return bytes(self.payload)


def test_loopback_capture_sees_plaintext_without_security():
    """The control for the cluster test below: with security off, the same capture sees tuple values."""
    if os.geteuid() != 0:
        pytest.skip("capturing packets needs root")
    context = zmq.Context()
    received: list = []
    inbound = Transport(context, 0, _inbound(received), bind_host="127.0.0.1")
    port = int(inbound.pull.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
    capture = LoopbackCapture({port})
    sender = Transport(context, 0, _inbound([]), bind_host="127.0.0.1")
    try:
        _send_word(sender, f"127.0.0.1:{port}", CANARY)
        poll_until(lambda: sender.pump(True, False) + inbound.pump(True, False) and bool(received), 10, "the tuple")
    finally:
        payload = capture.close()
        sender.close()
        inbound.close()
        context.term()
    assert CANARY.encode() in payload


def _write_config(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def _cli(config: Path, nimbus: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--config", str(config), "--nimbus", nimbus, *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_a_secured_cluster(tmp_path, zookeeper, zk_root):
    """Security on: only authorized keys get in, each role does only what it may, ZooKeeper is locked
    to the cluster's credentials, and no tuple value crosses loopback in plaintext."""
    if os.geteuid() != 0:
        pytest.skip("capturing packets needs root")
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoAuthError

    from streamgale.dev.cluster import ProcessCluster
    from streamgale.dev.secured import secured_settings

    keys, secured = secured_settings(tmp_path, "streamgale:s3cret-zk")
    cluster = ProcessCluster(tmp_path / "cluster", supervisors=2, slots=1, zookeeper=zookeeper.address,
                             zookeeper_root=zk_root, session_timeout=4.0, cwd=ROOT, settings=secured)
    nimbus = ",".join(cluster.nimbus_addresses())

    def user(name: str, role: str | None) -> Path:
        if role is not None:
            keys.create(name, role)
        else:
            KeyStore(tmp_path / "strangers").create(name)
        return _write_config(tmp_path / f"{name}.yaml", {
            "security.enabled": True, "security.identity": name,
            "security.keys_dir": str(keys.dir if role else tmp_path / "strangers")})

    alice, bob, rita = user("alice", "user"), user("bob", "user"), user("rita", "reader")
    mallory = user("mallory", None)
    (tmp_path / "strangers" / "cluster.key").write_bytes((keys.dir / "cluster.key").read_bytes())
    anonymous = _write_config(tmp_path / "anonymous.yaml", {})
    out = tmp_path / "out"
    try:
        cluster.start()
        worker_ports = {node.slot_base for node in cluster.nodes}

        # Nobody without an authorized key submits, lists or reads.
        for config, text in ((anonymous, "requires CURVE security"), (mallory, "refused key 'mallory'")):
            for args in (["list"], ["submit", TOPOLOGY, "--name", "evil"], ["kill", "wc"], ["logs", "wc"]):
                result = _cli(config, nimbus, *args)
                assert result.returncode != 0 and text in result.stderr, (args, result.stderr)

        # A reader cannot submit; a user can, and owns what it submits.
        result = _cli(rita, nimbus, "submit", TOPOLOGY, "--name", "wc")
        assert result.returncode == 1 and "user 'rita' (role reader) may not submit" in result.stderr
        capture = LoopbackCapture(worker_ports)
        result = _cli(alice, nimbus, "submit", TOPOLOGY, "--name", "wc", "-c", "topology.workers=2",
                      "-c", f"test.output_dir={out}", "-c", "test.sentences=3000", "-c", "test.rate=500")
        assert result.returncode == 0, result.stderr

        def counted() -> int:
            return sum(len(f.read_text().splitlines()) for f in out.glob("*")) if out.exists() else 0

        cluster.wait(lambda: counted() > 2000, 90, "word counts from both workers")
        payload = capture.close()
        assert capture.packets > 0, "nothing captured between the workers"
        assert CANARY.encode() not in payload and b"sentence" not in payload

        # A reader lists, reads stats and logs, but cannot kill; another user cannot manage alice's topology.
        listed = _cli(rita, nimbus, "list")
        assert listed.returncode == 0 and "wc" in listed.stdout
        assert _cli(rita, nimbus, "stats", "wc").returncode == 0
        logs = _cli(rita, nimbus, "logs", "wc")
        assert logs.returncode == 0, logs.stderr
        result = _cli(rita, nimbus, "kill", "wc")
        assert result.returncode == 1 and "user 'rita' (role reader) may not kill topology 'wc'" in result.stderr
        for action in (["kill", "wc"], ["deactivate", "wc"], ["rebalance", "wc", "-n", "1"]):
            result = _cli(bob, nimbus, *action)
            assert result.returncode == 1, result.stdout
            assert f"user 'bob' (role user) may not {action[0]} topology 'wc'" in result.stderr
            assert "(owners: alice)" in result.stderr

        # A plain ZooKeeper client without the credentials reads and writes nothing under the root.
        insider = KazooClient(zookeeper.address, auth_data=[("digest", "streamgale:s3cret-zk")])
        outsider = KazooClient(zookeeper.address)
        insider.start(10)
        outsider.start(10)
        try:
            paths, todo = [], [zk_root]
            while todo:
                path = todo.pop()
                paths.append(path)
                todo.extend(f"{path}/{c}" for c in insider.get_children(path))
            assert len(paths) > 10
            for path in paths:
                for attempt in (outsider.get, outsider.get_children, lambda p: outsider.set(p, b"x"),
                                lambda p: outsider.create(p + "/evil")):
                    with pytest.raises(NoAuthError):
                        attempt(path)
        finally:
            outsider.stop()
            insider.stop()

        # The owner manages its own topology.
        result = _cli(alice, nimbus, "kill", "wc", "-w", "0")
        assert result.returncode == 0, result.stderr
        cluster.check_alive()
    finally:
        cluster.close()
        cleaner = KazooClient(zookeeper.address, auth_data=[("digest", "streamgale:s3cret-zk")])
        cleaner.start(10)
        try:
            cleaner.delete(zk_root, recursive=True)
        except Exception:  # noqa: BLE001 - best effort; the root is unique to this test
            pass
        cleaner.stop()



def test_the_keys_commands(tmp_path):
    from click.testing import CliRunner
    from streamgale.cli.main import cli

    def keys(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["keys", *args, "--dir", str(tmp_path / "k")], obj=None)
        return result.exit_code, result.output

    assert keys("init") == (0, f"keys in {tmp_path / 'k'}: cluster key pair, admin (admin), daemon (daemon)\n")
    assert keys("init")[1].endswith("already holds a cluster key; nothing to do\n")
    code, out = keys("create", "alice", "--role", "user")
    assert code == 0 and out.startswith(f"created {tmp_path / 'k' / 'alice.key_secret'} (public key ")
    code, out = keys("list")
    assert code == 0 and [line.split()[:2] for line in out.splitlines()] == [
        ["NAME", "ROLE"], ["admin", "admin"], ["alice", "user"], ["daemon", "daemon"]]
    assert keys("authorize", "alice", "--role", "reader")[0] == 0
    assert "alice                    reader" in keys("list")[1]
    assert keys("rotate", "alice")[1].startswith("rotated alice: new public key ")
    assert keys("revoke", "alice") == (0, "revoked alice\n")
    assert keys("revoke", "alice") == (1, f"error: 'alice' is not authorized here (no "
                                          f"{tmp_path / 'k' / 'authorized' / 'alice.key'})\n")
    assert keys("create", "alice")[1].startswith("error: a key named 'alice' exists")


def test_the_ui_needs_a_token_with_security_on(keys):
    from streamgale.ui import make_server

    with pytest.raises(ValueError, match="security is on, so the UI needs ui.token_file .* with the key 'daemon'"):
        make_server("127.0.0.1", 0, ["127.0.0.1:1"], security=Security(keys, "daemon"))
