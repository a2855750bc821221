"""A real cluster for integration tests: nimbus and supervisors as CLI subprocesses.

Every daemon and every worker they start is killed at teardown, even when the
test fails (workers run in their own sessions, so they are found by the test's
directory in their command line).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import ROOT, STREAMGALE, Processes, daemon_logs, wait_for, worker_processes

from streamgale.dev.ports import free_port_range


class Cluster:
    def __init__(self, tmp_path: Path, zk_address: str, zk_root: str, processes: Processes,
                 supervisors: int = 2, slots: int = 2):
        self.dir = tmp_path
        self.processes = processes
        self.slots = slots
        base = free_port_range(1 + supervisors * slots)
        self.nimbus_port = base
        self.slot_bases = [base + 1 + i * slots for i in range(supervisors)]
        self.config_file = tmp_path / "cluster.yaml"
        self.config_file.write_text(yaml.safe_dump({
            "zookeeper.servers": [zk_address], "zookeeper.root": zk_root,
            "zookeeper.session_timeout": 4.0, "nimbus.host": "127.0.0.1", "nimbus.port": base,
            "workers": slots, "logging_level": "INFO",
        }))
        self.nimbus_procs: dict[int, subprocess.Popen] = {}
        self.supervisor_procs: dict[int, subprocess.Popen] = {}

    def _log(self, name: str):
        return open(self.dir / f"{name}.log", "ab")

    def start_nimbus(self, index: int = 0) -> subprocess.Popen:
        port = self.nimbus_port if index == 0 else free_port_range(1)
        proc = self.processes.start(
            [*STREAMGALE, "--config", str(self.config_file), "nimbus", "--host", "127.0.0.1", "--port", str(port)],
            stdout=self._log(f"nimbus-{index}"), stderr=subprocess.STDOUT)
        self.nimbus_procs[index] = proc
        return proc

    def local_dir(self, index: int) -> Path:
        return self.dir / f"supervisor-{index}"

    def start_supervisor(self, index: int) -> subprocess.Popen:
        proc = self.processes.start(
            [*STREAMGALE, "--config", str(self.config_file), "supervisor", "--host", "127.0.0.1",
             "-c", f"network.port={self.slot_bases[index]}", "-c", f"supervisor.local_dir={self.local_dir(index)}"],
            stdout=self._log(f"supervisor-{index}"), stderr=subprocess.STDOUT)
        self.supervisor_procs[index] = proc
        return proc

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*STREAMGALE, "--config", str(self.config_file), *args], capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT)

    def check_alive(self) -> None:
        """Fail at once, with the logs, if any daemon has exited."""
        for name, procs in (("nimbus", self.nimbus_procs), ("supervisor", self.supervisor_procs)):
            for index, proc in procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name}-{index} exited with {proc.returncode}\n{self.logs()}")

    def wait(self, predicate, timeout: float = 30, message: str = "condition"):
        """wait_for that also fails fast when a daemon dies."""
        def check():
            self.check_alive()
            return predicate()
        return wait_for(check, timeout=timeout, message=message)

    def wait_ready(self, cluster_state, supervisors: int) -> None:
        """Until nimbus answers and the supervisors are registered."""
        self.wait(lambda: len(cluster_state.supervisors()) >= supervisors, message=f"{supervisors} supervisors")
        self.wait(lambda: self.cli("list").returncode == 0, message="nimbus to answer")

    def worker_processes(self) -> list[psutil.Process]:
        return [p for p, _ in worker_processes(self.dir)]

    def logs(self) -> str:
        return daemon_logs(self.dir)

    def stop(self) -> None:
        for proc in list(self.nimbus_procs.values()) + list(self.supervisor_procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for p in self.worker_processes():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture
def cluster(tmp_path, zookeeper, zk_root, cluster_state, processes, request):
    """Nimbus + 2 supervisors with 2 slots each, started, registered and answering."""
    c = Cluster(tmp_path, zookeeper.address, zk_root, processes)
    try:
        c.start_nimbus()
        for i in range(2):
            c.start_supervisor(i)
        c.wait_ready(cluster_state, 2)
        yield c
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(c.logs())
        c.stop()
