"""Garbage on every listening port of a real cluster leaves every daemon and worker running and
the topology exact, and shows in the counters users read (``stats``, ``cluster``).

The cluster is the real one (ZooKeeper, nimbus and 2 supervisors started through the CLI, worker
processes). While a reliable word count runs, every TCP port its daemons and workers listen on
(found with psutil, not from configuration, so a listener nobody remembered is hit too) gets, on
fresh connections: random bytes, a valid ZMTP greeting then garbage, huge length prefixes, HTTP
requests, half a frame then a close, a burst of connections opened and dropped, and garbage
messages over a correct ZMTP handshake (so they reach the decoders behind ZeroMQ).
"""

from __future__ import annotations

import json
import random
import re
import socket
import sys
from collections.abc import Callable

import psutil
import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT

pytestmark = pytest.mark.slow

TOPOLOGY = str(ROOT / "tests" / "topologies" / "cluster_word_count.py")
sys.path.insert(0, str(ROOT / "tests" / "topologies"))
import cluster_word_count as wc  # noqa: E402
from test_cluster import final_counts, sink_lines, submit, wait_assigned  # noqa: E402

# -- speaking (bad) ZMTP by hand -------------------------------------------------------------

# ZMTP 3.0, NULL mechanism, as a client: signature, version, mechanism, as-server 0, filler.
GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + bytes(31)
PEER_TYPE = {b"ROUTER": b"DEALER", b"DEALER": b"DEALER", b"PULL": b"PUSH", b"REP": b"REQ", b"PUB": b"SUB",
             b"PAIR": b"PAIR"}


def _ready(socket_type: bytes) -> bytes:
    body = b"\x05READY" + b"\x0bSocket-Type" + len(socket_type).to_bytes(4, "big") + socket_type
    return b"\x04" + bytes([len(body)]) + body


def _frame(payload: bytes, more: bool = False) -> bytes:
    if len(payload) < 256:
        return bytes([0x01 if more else 0x00, len(payload)]) + payload
    return bytes([0x03 if more else 0x02]) + len(payload).to_bytes(8, "big") + payload


def _read(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def zmtp_session(address: tuple[str, int]) -> tuple[socket.socket, bytes] | None:
    """A TCP connection past the ZMTP handshake as a peer of whatever socket listens there
    (learned from its READY); None if it is not a NULL-mechanism ZeroMQ socket."""
    s = socket.create_connection(address, timeout=5)
    try:
        s.sendall(GREETING)
        greeting = _read(s, 64)
        if greeting[0] != 0xFF or greeting[12:16] != b"NULL":
            s.close()
            return None
        flags = _read(s, 1)[0]
        size = _read(s, 1)[0] if flags == 0x04 else int.from_bytes(_read(s, 8), "big")
        body = _read(s, size)
        props, i = {}, 1 + body[0]  # skip the command name
        while i < len(body):
            name = body[i + 1:i + 1 + body[i]]
            i += 1 + body[i]
            length = int.from_bytes(body[i:i + 4], "big")
            props[name] = body[i + 4:i + 4 + length]
            i += 4 + length
        server_type = props.get(b"Socket-Type", b"")
        s.sendall(_ready(PEER_TYPE.get(server_type, b"DEALER")))
        return s, server_type
    except OSError:
        s.close()
        return None


def _send(address: tuple[str, int], data: bytes, linger: bool = False) -> None:
    """One connection: send ``data`` (as much as the server takes), then close."""
    try:
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(data)
            if linger:
                s.settimeout(0.2)
                try:
                    s.recv(4096)  # let the server answer (or close) before we do
                except OSError:
                    pass
    except OSError:
        pass  # the server closed on us: what it should do


def _session_then(address: tuple[str, int], *chunks: bytes) -> None:
    session = zmtp_session(address)
    if session is None:
        return
    s, _ = session
    with s:
        try:
            for chunk in chunks:
                s.sendall(chunk)
            s.settimeout(0.2)
            s.recv(4096)
        except OSError:
            pass


def attacks(rng: random.Random) -> dict[str, Callable[[tuple[str, int]], None]]:
    huge = (1 << 63) - 1
    return {
        "random bytes": lambda a: _send(a, rng.randbytes(64 << 10)),
        "random bytes, small": lambda a: [_send(a, rng.randbytes(rng.randrange(1, 300))) for _ in range(20)],
        "ZMTP greeting then garbage": lambda a: _send(a, GREETING + rng.randbytes(4096), linger=True),
        "greeting of another version then garbage": lambda a: _send(a, GREETING[:10] + b"\x09\x09" + rng.randbytes(200)),
        "huge ZMTP/1.0 length prefix": lambda a: _send(a, b"\xff" + (2**64 - 1).to_bytes(8, "big") + b"\x00" * 64),
        "huge command length after the greeting": lambda a: _send(a, GREETING + b"\x06" + huge.to_bytes(8, "big"),
                                                                  linger=True),
        "huge message length after the handshake": lambda a: _session_then(a, b"\x02" + huge.to_bytes(8, "big")),
        "HTTP GET": lambda a: _send(a, b"GET /metrics HTTP/1.1\r\nHost: streamgale\r\n\r\n", linger=True),
        "HTTP POST": lambda a: _send(a, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{\"op\":",
                                     linger=True),
        "half a greeting then close": lambda a: _send(a, GREETING[:23]),
        "half a frame then close": lambda a: _session_then(a, b"\x02" + (1000).to_bytes(8, "big") + b"x" * 10),
        "half a command then close": lambda a: _send(a, GREETING + b"\x04\x30\x05READY"),
        "garbage messages after the handshake": lambda a: _session_then(
            a, *(_frame(rng.randbytes(n)) for n in (0, 1, 7, 200, 3000)),
            _frame(b"\x93\x03\xa1T\x91\x97" + rng.randbytes(30)),  # almost a tuple frame
            _frame(b"\x84\xa1v\x01\xa2id\x05\xa2op\xa4kill\xa4args\x90"),  # almost a request
            _frame(b"part", more=True) + _frame(rng.randbytes(40))),
        "connections opened and dropped": _open_and_drop,
    }


def _open_and_drop(address: tuple[str, int]) -> None:
    held = []
    try:
        for _ in range(100):  # at once, then all dropped
            held.append(socket.create_connection(address, timeout=5))
    except OSError:
        pass
    for s in held:
        s.close()
    for _ in range(100):  # one after another
        _send(address, b"")


# -- the cluster -----------------------------------------------------------------------------

def listening(pid: int) -> set[tuple[str, int]]:
    """Where process ``pid`` listens on TCP (as addresses to connect to)."""
    out = set()
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN:
            ip = conn.laddr.ip
            out.add(("127.0.0.1" if ip in ("0.0.0.0", "::", "") else ip, conn.laddr.port))
    return out


BAD_INPUT_LINE = re.compile(r"bad input at (nimbus|supervisor) (\S+).*?: (\d+) rejected requests, "
                            r"(\d+) refused handshakes, (\d+) denied keys(?:, (\d+) malformed worker-channel)?")


def daemon_counters(cluster) -> dict[tuple[str, str], tuple[int, int, int]]:  # noqa: F811
    """(daemon, id) -> (rejected requests, refused handshakes, malformed channel messages), as
    `streamgale cluster` prints them."""
    r = cluster.cli("cluster")
    if r.returncode != 0:
        return {}
    out = {}
    for m in BAD_INPUT_LINE.finditer(r.stdout):
        out[(m[1], m[2])] = (int(m[3]), int(m[4]), int(m[6] or 0))
    return out


def stats(cluster) -> dict | None:  # noqa: F811
    r = cluster.cli("stats", "cluster-wc", "--json")
    return json.loads(r.stdout) if r.returncode == 0 else None


def test_garbage_on_every_listening_port_is_survived_and_counted(cluster, cluster_state, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    sentences = 3000  # 15 s at 100 sentences/s per spout task: the garbage arrives while it runs
    submit(cluster, out, "-c", f"test.sentences={sentences}", "-c", "test.rate=100")
    assignment = wait_assigned(cluster, cluster_state, 2)
    cluster.wait(lambda: len(sink_lines(out)) > 50, timeout=60, message="output")

    daemons = {f"nimbus-{i}": p.pid for i, p in cluster.nimbus_procs.items()}
    daemons |= {f"supervisor-{i}": p.pid for i, p in cluster.supervisor_procs.items()}
    workers = {p.pid for p in cluster.worker_processes()}
    assert len(workers) == 2
    targets = {name: listening(pid) for name, pid in daemons.items()}
    targets |= {f"worker-{pid}": listening(pid) for pid in workers}

    # What must be among them: nimbus's API, each supervisor's log endpoint and worker channel,
    # each worker's slot port.
    info = json.loads(cluster.cli("info", "cluster-wc").stdout)
    assert ("127.0.0.1", cluster.nimbus_port) in targets["nimbus-0"]
    sups = {s.id: s for s in cluster_state.supervisors().values()}
    for i in cluster.supervisor_procs:
        local = cluster.local_dir(i)
        sid = (local / "supervisor-id").read_text().strip()
        channel = int((local / "channel-port").read_text())
        assert {("127.0.0.1", channel), ("127.0.0.1", sups[sid].log_port)} <= targets[f"supervisor-{i}"]
    slot_ports = {s["port"] for s in info["assignment"]["slots"].values()}
    assert slot_ports == {port for pid in workers for _, port in targets[f"worker-{pid}"]}
    assert slot_ports == {s.port for s in assignment.slots.values()}

    rng = random.Random(17)
    for name, addresses in sorted(targets.items()):
        for address in sorted(addresses):
            for attack, send in attacks(rng).items():
                send(address)
                cluster.check_alive()  # a daemon that died names the attack that killed it
                gone = workers - {p.pid for p in cluster.worker_processes()}
                assert not gone, f"{attack} on {name} {address} killed worker(s) {gone}"

    # Every daemon and worker is the same process as before.
    assert {f"nimbus-{i}": p.pid for i, p in cluster.nimbus_procs.items() if p.poll() is None} | {
        f"supervisor-{i}": p.pid for i, p in cluster.supervisor_procs.items() if p.poll() is None} == daemons
    assert {p.pid for p in cluster.worker_processes()} == workers

    # The topology completes exactly: every sentence counted once, every spout tuple acked.
    expected = wc.expected_counts(sentences)
    cluster.wait(lambda: final_counts(out) == expected, timeout=90, message="exact counts of every sentence")
    assert len(sink_lines(out)) == sum(expected.values())  # no word counted twice (no replay)

    def all_acked() -> dict | None:
        s = stats(cluster)
        spout = (s or {}).get("components", {}).get("sentences", {}).get("windows", {}).get("all", {})
        return s if spout.get("acked") == sentences else None
    final = cluster.wait(all_acked, timeout=30, message=f"the spouts' {sentences} tuples acked in the stats")
    assert final["components"]["sentences"]["windows"]["all"]["failed"] == 0
    assert {p.pid for p in cluster.worker_processes()} == workers

    # The garbage shows where users look: the topology's dropped frames in `stats` (all of it and
    # each worker's), every daemon's rejected requests and refused handshakes in `cluster`.
    def worker_drops() -> dict | None:
        s = stats(cluster)
        if not s or s["bad_input"]["dropped_frames"] < 2:
            return None
        per_worker = {w["port"]: w["transport"].get("dropped_frames", 0) for w in s["workers"]}
        return s if set(per_worker) == slot_ports and all(per_worker.values()) else None
    s = cluster.wait(worker_drops, timeout=30, message="dropped frames of both workers in the stats")
    text = cluster.cli("stats", "cluster-wc").stdout
    assert f"bad input: {s['bad_input']['dropped_frames']:,} frames dropped" in text

    sids = {(cluster.local_dir(i) / "supervisor-id").read_text().strip() for i in cluster.supervisor_procs}

    def everyone_counted() -> dict | None:
        counted = daemon_counters(cluster)
        nimbus = counted.get(("nimbus", f"127.0.0.1:{cluster.nimbus_port}"))
        supervisors = [counted.get(("supervisor", sid)) for sid in sids]
        if nimbus is None or not (nimbus[0] > 0 and nimbus[1] > 0):
            return None
        if not all(c is not None and c[0] > 0 and c[1] > 0 and c[2] > 0 for c in supervisors):
            return None
        return counted
    cluster.wait(everyone_counted, timeout=30,
                 message="rejected requests, refused handshakes and malformed channel messages of every daemon")
    cluster.check_alive()
