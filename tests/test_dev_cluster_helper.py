"""streamgale.dev.cluster.ProcessCluster: the one helper behind dev-cluster, the test clusters
and the benchmarks."""

from __future__ import annotations

import shutil
import socket

import psutil
import pytest
import yaml
from conftest import ROOT, wait_for

from streamgale.config import load_config
from streamgale.dev.cluster import ProcessCluster, ProcessClusterError, SupervisorNode
from streamgale.dev.zookeeper_server import ZooKeeperServerError, find_classpath

NO_ZOOKEEPER = "127.0.0.1:1"  # the daemons below never get as far as connecting


def cluster_processes(directory) -> list[psutil.Process]:
    """Every daemon (``streamgale.cli``) or worker (``streamgale.worker``) naming ``directory``."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if (any(m in cmd for m in ("streamgale.cli", "streamgale.worker")) and any(str(directory) in a for a in cmd)
                and p.info["status"] != psutil.STATUS_ZOMBIE):
            found.append(p)
    return found


def test_the_config_file_holds_the_cluster_and_its_own_keys_win(tmp_path):
    c = ProcessCluster(tmp_path, supervisors=3, slots=2, zookeeper=NO_ZOOKEEPER, zookeeper_root="/t-1",
                       session_timeout=4.0, settings={"topology.workers": 3, "workers": 9})
    try:
        written = yaml.safe_load(c.config_file.read_text())
        assert written["workers"] == 2 and written["topology.workers"] == 3
        config = load_config(c.config_file)  # strict: every key known and valid
        assert config["zookeeper.servers"] == (NO_ZOOKEEPER,) and config["zookeeper.root"] == "/t-1"
        assert config["zookeeper.session_timeout"] == 4.0 and config["nimbus.port"] == c.nimbus_port
        ports = [b + k for b in c.slot_bases for k in range(2)]
        assert len(set(ports)) == 6 and c.nimbus_port not in ports
        assert c.nimbus_addresses() == [f"127.0.0.1:{c.nimbus_port}"]
        assert c.zookeeper is None and c.local_dir(1) == tmp_path / "supervisor-1"
    finally:
        c.close()
    assert tmp_path.is_dir()  # a directory it was given is kept


def test_optional_keys_are_left_to_the_daemons_and_a_temporary_directory_is_removed():
    c = ProcessCluster(nodes=[SupervisorNode("127.0.0.2", 7000, ("env",))], zookeeper=NO_ZOOKEEPER)
    written = yaml.safe_load(c.config_file.read_text())
    assert "zookeeper.root" not in written and "zookeeper.session_timeout" not in written
    assert c.slot_bases == [7000]
    c.close()
    c.close()  # idempotent
    assert not c.dir.exists()


def test_a_daemon_that_dies_fails_wait_ready_at_once_with_its_log(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        c = ProcessCluster(tmp_path, supervisors=1, zookeeper=NO_ZOOKEEPER, nimbus_port=taken.getsockname()[1],
                           cwd=ROOT)
        try:
            c.start_nimbus()
            with pytest.raises(ProcessClusterError) as failed:
                c.wait_ready(0, timeout=30)
            assert "nimbus-0 (status 1) exited" in str(failed.value)
            assert "===== nimbus-0.log =====" in str(failed.value)  # with its log
            with pytest.raises(ProcessClusterError, match="already running"):
                c.start_supervisor(0)
                c.start_supervisor(0)
        finally:
            c.close()
    assert not cluster_processes(tmp_path)


@pytest.fixture
def zookeeper_installed():
    try:
        find_classpath()
    except ZooKeeperServerError as e:
        pytest.skip(str(e))
    if shutil.which("java") is None:
        pytest.skip("ZooKeeper needs java on PATH")


@pytest.mark.slow
def test_own_zookeeper_submit_kill_and_close_leaves_no_process(tmp_path, zookeeper_installed):
    c = ProcessCluster(tmp_path / "cluster", supervisors=2, slots=2, session_timeout=4.0, cwd=ROOT)
    try:
        c.start()
        out = tmp_path / "out"
        r = c.cli("submit", str(ROOT / "tests" / "topologies" / "cluster_word_count.py"),
                  "-c", f"test.output_dir={out}", "-c", "test.sentences=1000000", "-c", "test.rate=20")
        assert r.returncode == 0, r.stderr + c.logs()
        c.wait(lambda: len(c.worker_processes()) == 2 and len(list(out.glob("sink-*.txt"))) == 2,
               timeout=60, message="two workers writing")
        assert "===== supervisor-0.log =====" in c.logs()

        c.stop_supervisor(0)  # killed like a crash: its workers run on, and its restart adopts them
        c.check_alive()
        c.restart_supervisor(0)
        c.wait_ready(2)
        assert len(c.worker_processes()) == 2
        assert len(cluster_processes(c.dir)) == 5  # nimbus, 2 supervisors, 2 workers
    finally:
        c.close()
    assert not cluster_processes(c.dir)
    assert not c.zookeeper.running
    wait_for(lambda: not cluster_processes(tmp_path), timeout=5, message="nothing left")
