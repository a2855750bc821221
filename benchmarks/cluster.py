"""A real cluster for benchmarks: ZooKeeper, nimbus and supervisors on localhost.

The daemons are started through the CLI, exactly as an operator would, in a
temporary directory that is removed afterwards together with every process.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from streamgale.cluster.state import ClusterState
from streamgale.dev.ports import free_port, free_port_range
from streamgale.dev.zookeeper_server import ZooKeeperServer

CLI = [sys.executable, "-m", "streamgale.cli"]


class BenchCluster:
    def __init__(self, supervisors: int = 2, slots: int = 2):
        self.supervisors, self.slots = supervisors, slots
        self.dir = Path(tempfile.mkdtemp(prefix="streamgale-bench-"))
        self.procs: list[subprocess.Popen] = []
        self.zk = ZooKeeperServer(port=free_port(), data_dir=self.dir / "zookeeper")

    def __enter__(self) -> "BenchCluster":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.zk.start()
        nimbus_port = free_port()
        slots = free_port_range(self.supervisors * self.slots)
        self.config_file = self.dir / "cluster.yaml"
        self.config_file.write_text(yaml.safe_dump({
            "zookeeper.servers": [self.zk.address], "nimbus.host": "127.0.0.1", "nimbus.port": nimbus_port,
            "workers": self.slots, "logging_level": "WARNING"}))
        self._spawn("nimbus", "--host", "127.0.0.1")
        for i in range(self.supervisors):
            self._spawn("supervisor", "--host", "127.0.0.1", "--shutdown-workers",
                        "-c", f"network.port={slots + i * self.slots}",
                        "-c", f"supervisor.local_dir={self.dir / f'supervisor-{i}'}")
        with ClusterState([self.zk.address]) as state:
            deadline = time.monotonic() + 60
            while len(state.supervisors()) < self.supervisors:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"the benchmark cluster did not come up; logs in {self.dir}")
                time.sleep(0.05)

    def _spawn(self, *args: str) -> None:
        log = open(self.dir / f"{args[0]}-{len(self.procs)}.log", "ab")
        self.procs.append(subprocess.Popen([*CLI, "--config", str(self.config_file), *args],
                                           stdout=log, stderr=subprocess.STDOUT))

    def cli(self, *args: str) -> str:
        r = subprocess.run([*CLI, "--config", str(self.config_file), *args], capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"streamgale {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def wait(self, condition, timeout: float, what: str):
        """Poll ``condition`` until it returns something truthy (returned), or fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while not (result := condition()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; logs in {self.dir}")
            time.sleep(0.1)
        return result

    def wait_gone(self, name: str, timeout: float = 60) -> None:
        """Until a killed topology's workers have all exited (before the next run starts)."""
        self.wait(lambda: name not in self.cli("list") and not self.worker_processes(), timeout,
                  f"topology {name} to go away")

    def worker_processes(self) -> list[psutil.Process]:
        """This cluster's worker processes: ``streamgale.worker`` with a path under its directory."""
        found = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or ())
            if "streamgale.worker" in cmd and str(self.dir) in cmd:
                found.append(p)
        return found

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.zk.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


TOPOLOGY = Path(__file__).resolve().parent / "topologies" / "cluster_word_count.py"


def cluster_word_count(cluster: BenchCluster, sentences: int, workers: int, acked: bool = False,
                       timeout: float = 600, config: tuple[str, ...] = ()) -> float:
    """Words per second of the cluster word count: first spout emit to last word counted."""
    out = cluster.dir / f"out-{time.monotonic_ns()}"
    out.mkdir()
    cluster.cli("submit", str(TOPOLOGY), "-c", f"topology.workers={workers}",
                "-c", f"bench.sentences={sentences}", "-c", f"bench.output_dir={out}",
                "-c", f"bench.acked={str(acked).lower()}", *(arg for kv in config for arg in ("-c", kv)))
    words = 10 * sentences
    deadline = time.monotonic() + timeout
    try:
        while True:
            progress = [f.read_text().split() for f in out.glob("count-*.txt")]
            if sum(int(p[0]) for p in progress) >= words:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster word count did not finish in {timeout} s; logs in {cluster.dir}")
            time.sleep(0.05)
        start = min(float(f.read_text()) for f in out.glob("start-*.txt"))
        end = max(float(p[1]) for p in progress)
        return words / (end - start)
    finally:
        cluster.cli("kill", "bench-cluster-wc", "-w", "0")
        cluster.wait_gone("bench-cluster-wc")
