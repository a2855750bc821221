"""`streamgale dev-cluster`: the one-command cluster a newcomer starts from the README."""

import ipaddress
import signal
import subprocess

import psutil
import pytest
import yaml
from conftest import ROOT, STREAMGALE, wait_for

from streamgale.dev.ports import free_port_range

pytestmark = pytest.mark.slow


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # Java's ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def test_dev_cluster_runs_a_topology_and_ctrl_c_stops_everything(tmp_path, processes):
    base = free_port_range(6)
    conf = tmp_path / "dev.yaml"
    conf.write_text(yaml.safe_dump({"nimbus.port": base, "network.port": base + 2, "workers": 2}))
    cli = [*STREAMGALE, "--config", str(conf)]
    proc = processes.start([*cli, "dev-cluster", "--supervisors", "2", "--zookeeper-port", str(base + 1),
                            "--dir", str(tmp_path / "dev")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def run(*args):
        return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)

    def two_supervisors():
        assert proc.poll() is None, proc.stderr.read()
        r = run("cluster")
        return r.returncode == 0 and r.stdout.count("127.0.0.1") >= 2
    wait_for(two_supervisors, timeout=60, message="the dev cluster to come up")

    out = tmp_path / "out"
    topology = ROOT / "tests" / "topologies" / "cluster_word_count.py"
    submitted = run("submit", str(topology), "-c", f"test.output_dir={out}", "-c", "test.sentences=200")
    assert submitted.returncode == 0, submitted.stderr
    assert "cluster-wc" in run("list").stdout
    wait_for(lambda: len(list(out.glob("sink-*.txt"))) == 2, timeout=60, message="both sinks to write")
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 5  # ZooKeeper, nimbus, 2 supervisors, workers
    listening = {(c.name(), conn.laddr.ip, conn.laddr.port) for c in children
                 for conn in c.net_connections(kind="inet") if conn.status == psutil.CONN_LISTEN}
    assert len(listening) >= 2 + 2 * 2 + 2  # ZooKeeper, nimbus, each supervisor's log endpoint and channel
    assert all(_loopback(ip) for _, ip, _ in listening), listening

    # A second dev cluster on the same ports fails at once, saying which, and exits non-zero.
    second = subprocess.run([*cli, "dev-cluster", "--zookeeper-port", str(base + 1), "--dir", str(tmp_path / "b")],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert second.returncode == 1
    assert f"nimbus port {base}, ZooKeeper port {base + 1}, worker slots port {base + 2}" in second.stderr
    assert "already in use" in second.stderr and "dev cluster up" not in second.stderr

    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
             timeout=30, message="every daemon and worker to stop")
