"""Health probes: /healthz and /readyz of nimbus, supervisors and the UI, and `streamgale health`."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
from conftest import ROOT, STREAMGALE

from streamgale.dev.ports import free_port
from streamgale.health import LIVENESS, READINESS, HealthServer, LoopWatch, probe


def test_a_loop_that_stops_turning_is_not_alive():
    now = [0.0]
    watch = LoopWatch(stuck_after=30, clock=lambda: now[0])
    assert watch.check() == (True, "starting")
    watch.tick()
    now[0] = 30.0
    assert watch.check() == (True, "ok")
    now[0] = 31.0
    assert watch.check() == (False, "the main loop has not turned for 31 s")


def test_the_server_answers_each_check_with_its_status():
    ready = [False, "starting"]

    def failing() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server = HealthServer("127.0.0.1", 0, lambda: (True, "ok"), lambda: (ready[0], ready[1])).start()
    bad = HealthServer("127.0.0.1", 0, failing, failing).start()
    try:
        assert probe("127.0.0.1", server.port, LIVENESS) == (True, "ok")
        assert probe("127.0.0.1", server.port, READINESS) == (False, "starting")
        ready[:] = [True, "leader"]
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{READINESS}") as r:
            assert r.status == 200 and json.loads(r.read()) == {"ok": True, "reason": "leader"}
        assert probe("127.0.0.1", server.port, "/nothing") == (False, "no such check; try /healthz or /readyz")
        assert probe("127.0.0.1", bad.port, LIVENESS) == (False, "the check failed: RuntimeError: boom")
    finally:
        server.close()
        bad.close()
    ok, reason = probe("127.0.0.1", server.port, LIVENESS, timeout=1)
    assert not ok and reason.startswith(f"no answer from http://127.0.0.1:{server.port}/healthz")


def _health(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STREAMGALE, "health", "--port", str(port), *args], capture_output=True, text=True,
                          timeout=30, cwd=ROOT)


@pytest.mark.slow
def test_readiness_follows_zookeeper(tmp_path):
    """Nimbus and a supervisor through the CLI with --health-port: ready once up, not ready while their
    ZooKeeper is down, ready again when it returns; alive throughout."""
    from streamgale.dev.cluster import ProcessCluster

    health = {"nimbus": free_port(), "supervisor": free_port()}
    cluster = ProcessCluster(tmp_path / "cluster", supervisors=1, slots=1, session_timeout=4.0, cwd=ROOT)
    try:
        cluster.start_zookeeper()
        cluster.start_nimbus(0, ["--health-port", str(health["nimbus"])])
        cluster.start_supervisor(0, ["--health-port", str(health["supervisor"])])

        def ready(port: int) -> bool:
            return _health(port, "--ready").returncode == 0

        for port in health.values():
            cluster.wait(lambda p=port: ready(p), 60, "ready")
        answer = _health(health["nimbus"], "--ready")
        assert answer.stdout == "ready: leader\n"
        assert _health(health["supervisor"], "--ready").stdout.startswith("ready: registered as ")

        assert cluster.zookeeper is not None
        cluster.zookeeper.stop()
        for port in health.values():
            cluster.wait(lambda p=port: not ready(p), 30, "not ready without ZooKeeper")
            assert "not connected to ZooKeeper" in _health(port, "--ready").stderr
            assert _health(port).returncode == 0  # still alive: nothing to restart
        cluster.zookeeper.start()
        for port in health.values():
            cluster.wait(lambda p=port: ready(p), 60, "ready again")
    finally:
        cluster.close()


def test_health_without_a_port_says_so():
    result = subprocess.run([*STREAMGALE, "health"], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 2 and "error: no port: pass --port or set health.port" in result.stderr


def test_the_ui_is_ready_when_it_reaches_nimbus():
    import threading

    from streamgale.ui import make_server

    server = make_server("127.0.0.1", 0, [f"127.0.0.1:{free_port()}"], timeout=0.5)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert probe("127.0.0.1", port, LIVENESS) == (True, "ok")
        ok, reason = probe("127.0.0.1", port, READINESS)
        assert not ok and reason.startswith("cannot reach nimbus: cannot reach nimbus at 127.0.0.1:")
    finally:
        server.shutdown()
        server.server_close()
