"""Tests for the network-namespace fault-injection harness (tests/netns.py)."""

from __future__ import annotations

import os
import secrets
import selectors
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from netns import Host, NetLab, unavailable_reason

_REASON = unavailable_reason()
if _REASON is not None:
    pytest.skip(f"network namespaces unavailable: {_REASON}", allow_module_level=True)

TESTS_DIR = Path(__file__).resolve().parent
PY = sys.executable

# Threaded echo server: binds argv[1] on an ephemeral port, prints the port, echoes forever.
ECHO_SERVER = textwrap.dedent("""
    import socket, sys, threading
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((sys.argv[1], 0))
    srv.listen(16)
    print(srv.getsockname()[1], flush=True)
    def serve(conn):
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
""")

# Client: connect to argv[1]:argv[2] with timeout argv[3], send argv[4], print the reply.
CLIENT = textwrap.dedent("""
    import socket, sys
    host, port, timeout, message = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(message.encode())
        print(s.recv(4096).decode(), flush=True)
""")


def read_line(proc: subprocess.Popen[str], timeout: float = 5.0) -> str:
    """First line of ``proc``'s stdout, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no output from {proc.args} within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"{proc.args} exited ({proc.poll()}) before printing")
    return line.strip()


def start_echo_server(host: Host) -> tuple[subprocess.Popen[str], int]:
    proc = host.popen([PY, "-c", ECHO_SERVER, host.address], stdout=subprocess.PIPE, text=True)
    return proc, int(read_line(proc))


def run_client(host: Host, address: str, port: int, message: str, timeout: float = 2.0):
    return host.run([PY, "-c", CLIENT, address, str(port), str(timeout), message],
                    capture_output=True, text=True, timeout=timeout + 10)


def echo_from_root(address: str, port: int, message: bytes, timeout: float = 2.0) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as s:
        s.sendall(message)
        return s.recv(4096)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)
    if proc.stdout:
        proc.stdout.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    with NetLab(hosts=2) as lab:
        yield lab


@pytest.fixture
def echo(lab: NetLab) -> Iterator[int]:
    """Echo server in hosts[0] bound to its lab address; yields the port."""
    a = lab.hosts[0]
    proc, port = start_echo_server(a)
    try:
        yield port
    finally:
        a.heal()  # never leave the shared lab cut, even if a test failed mid-way
        stop(proc)


def test_hosts_and_root_reach_server_in_host(lab: NetLab, echo: int) -> None:
    a, b = lab.hosts
    assert a.address != b.address
    result = run_client(b, a.address, echo, "hello from b")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from b"
    assert echo_from_root(a.address, echo, b"hello from root") == b"hello from root"


def test_host_reaches_server_in_root_namespace(lab: NetLab) -> None:
    srv = socket.socket()
    srv.bind((lab.bridge_address, 0))
    srv.listen(1)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    peers: list[str] = []

    def serve() -> None:
        try:
            conn, peer = srv.accept()
        except OSError:
            return
        with conn:
            peers.append(peer[0])
            conn.sendall(b"reply:" + conn.recv(4096))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        result = run_client(lab.hosts[1], lab.bridge_address, port, "ping")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "reply:ping"
        thread.join(timeout=5)
        assert peers == [lab.hosts[1].address]
    finally:
        srv.close()
        thread.join(timeout=5)


def test_cut_isolates_host_and_heal_restores_it(lab: NetLab, echo: int) -> None:
    a, b = lab.hosts
    established = socket.create_connection((a.address, echo), timeout=2)
    try:
        established.sendall(b"before")
        assert established.recv(4096) == b"before"

        a.cut()
        assert a.is_cut

        # New connections from another host time out.
        started = time.monotonic()
        result = run_client(b, a.address, echo, "during cut", timeout=1.0)
        assert result.returncode != 0
        assert "timed out" in result.stderr, result.stderr
        assert time.monotonic() - started < 5

        # ... and from the root namespace.
        with pytest.raises(OSError):
            echo_from_root(a.address, echo, b"during cut", timeout=1.0)

        # The established connection stops delivering data.
        established.settimeout(1.0)
        established.sendall(b"lost")
        with pytest.raises(socket.timeout):
            established.recv(4096)

        a.heal()
        assert not a.is_cut
        # Nothing of ours is left in the namespace's filter table.
        rules = a.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
        assert rules.split() == "-P INPUT ACCEPT -P FORWARD ACCEPT -P OUTPUT ACCEPT".split()

        result = run_client(b, a.address, echo, "after heal")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "after heal"
        assert echo_from_root(a.address, echo, b"after heal") == b"after heal"
    finally:
        established.close()


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _output(args: list[str]) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def _lab_leftovers(base: str) -> tuple[list[str], list[str]]:
    """(namespaces, root-namespace links) whose names start with ``base``."""
    namespaces = [line.split()[0] for line in _output(["ip", "netns", "list"]).splitlines()]
    # `ip -o link` lines look like "7: sg1a2b3cv0@if2: <BROADCAST,...> ..."
    links = [line.split(":")[1].strip().split("@")[0]
             for line in _output(["ip", "-o", "link"]).splitlines()]
    return ([n for n in namespaces if n.startswith(base)],
            [n for n in links if n.startswith(base)])


def test_close_removes_everything_and_kills_processes() -> None:
    lab = NetLab(hosts=2, prefix="sgt")
    try:
        base = lab.bridge[: -len("br")]
        namespaces, links = _lab_leftovers(base)
        assert sorted(namespaces) == sorted(h.name for h in lab.hosts)
        assert sorted(links) == sorted([lab.bridge, f"{base}v0", f"{base}v1"])

        sleeper = lab.hosts[0].popen(["sleep", "1000"])
        # A grandchild, and a process started without Host.popen: close() must find them too.
        parent = lab.hosts[1].popen(["sh", "-c", "sleep 1000 & echo $!; wait"],
                                    stdout=subprocess.PIPE, text=True)
        grandchild = int(read_line(parent))
        foreign = subprocess.Popen(lab.hosts[1].command(["sleep", "1000"]))
        pids_cmd = ["ip", "netns", "pids", lab.hosts[1].name]
        wait_for(lambda: str(foreign.pid) in _output(pids_cmd).split(), timeout=5,
                 message="foreign sleep to enter the namespace")
        assert sleeper.poll() is None and _alive(grandchild)
    finally:
        lab.close()
    try:
        assert _lab_leftovers(base) == ([], [])
        assert sleeper.poll() == -9  # killed and reaped by close()
        assert parent.poll() == -9
        assert foreign.wait(timeout=5) == -9
        wait_for(lambda: not _alive(grandchild), timeout=5, message="grandchild to die")
        lab.close()  # idempotent
    finally:
        for proc in (sleeper, parent, foreign):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if parent.stdout:
            parent.stdout.close()


# Runs inside a host whose filter table has DROP policies everywhere, i.e. a "root
# namespace" as hostile as a Docker host with br_netfilter: builds a nested lab there.
NESTED = textwrap.dedent("""
    import socket, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    import test_netns as t
    from netns import NetLab
    before = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    with NetLab(hosts=2, prefix=sys.argv[2]) as lab:
        a, b = lab.hosts
        proc, port = t.start_echo_server(a)
        r = t.run_client(b, a.address, port, "host-to-host")
        assert r.stdout.strip() == "host-to-host", r.stderr
        assert t.echo_from_root(a.address, port, b"root-to-host") == b"root-to-host"
        srv = socket.socket()
        srv.bind((lab.bridge_address, 0))
        srv.listen(1)
        srv.settimeout(5)
        r = b.popen([sys.executable, "-c", t.CLIENT, lab.bridge_address,
                     str(srv.getsockname()[1]), "2", "host-to-root"])
        conn, _ = srv.accept()
        assert conn.recv(100) == b"host-to-root"
        conn.close()
        t.stop(proc)
    after = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert before == after, (before, after)
    print("OK", flush=True)
""")


def test_lab_works_under_restrictive_root_firewall() -> None:
    inner_prefix = f"n{secrets.token_hex(2)}"
    with NetLab(hosts=1) as outer:
        host = outer.hosts[0]
        bridge_nf = host.run(["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"],
                             capture_output=True, text=True)
        if bridge_nf.stdout.strip() != "1":
            pytest.skip("br_netfilter is not active in new namespaces")
        for chain in ("INPUT", "FORWARD", "OUTPUT"):
            host.run(["iptables", "-P", chain, "DROP"], check=True)
        try:
            result = host.run([PY, "-c", NESTED, str(TESTS_DIR), inner_prefix],
                              capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
            assert result.stdout.strip() == "OK", result.stderr
        finally:
            # Should the nested lab have leaked (e.g. a crash), remove what it left behind.
            namespaces, _ = _lab_leftovers(inner_prefix)
            for ns in namespaces:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            assert namespaces == []
