"""A cluster for fault injection: every supervisor on a host of its own.

ZooKeeper and nimbus run in the root namespace, bound to the lab bridge's
address; each supervisor (and the workers it starts) runs in its own network
namespace with its own address, so a node can be cut off with iptables. Where
namespaces are unavailable (not root, no iptables) the supervisors share
loopback and the partition scenario is skipped, saying why.

Everything is torn down at the end, even when the test fails: processes in the
namespaces with the namespaces, root-namespace daemons through ``Processes``,
and stray workers by the test directory in their command line.
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import psutil
import yaml

from conftest import ROOT, STREAMGALE, Processes, daemon_logs, wait_for, worker_processes
from netns import NetLab, unavailable_reason

from streamgale.cluster.state import ClusterState
from streamgale.dev.ports import free_port, free_port_range
from streamgale.dev.zookeeper_server import ZooKeeperServer

TOPOLOGY = str(ROOT / "tests" / "topologies" / "durable.py")
SLOT_BASE = 6700  # inside namespaces every host has its own ports


class FaultCluster:
    def __init__(self, tmp_path: Path, processes: Processes, supervisors: int = 3, slots: int = 2):
        self.dir = tmp_path
        self.processes = processes
        self.slots = slots
        self.netns_reason = unavailable_reason()
        self.lab = NetLab(supervisors) if self.netns_reason is None else None
        self.bind = self.lab.bridge_address if self.lab else "127.0.0.1"
        self.zk = ZooKeeperServer(port=free_port(self.bind), data_dir=tmp_path / "zookeeper", host=self.bind)
        self.nimbus_ports: dict[int, int] = {}
        self.nimbus_procs: dict[int, subprocess.Popen] = {}
        self.supervisor_procs: dict[int, subprocess.Popen] = {}
        self.slot_bases = ([SLOT_BASE] * supervisors if self.lab
                           else [free_port_range(slots) for _ in range(supervisors)])
        self.config_file = tmp_path / "cluster.yaml"
        self.state: ClusterState | None = None

    # -- start ----------------------------------------------------------------------------------

    def start(self, nimbuses: int = 1) -> "FaultCluster":
        self.zk.start()
        self.nimbus_ports = {i: free_port(self.bind) for i in range(nimbuses)}
        self.config_file.write_text(yaml.safe_dump({
            "zookeeper.servers": [self.zk.address], "nimbus.host": self.bind,
            "nimbus.port": self.nimbus_ports[0], "workers": self.slots, "logging_level": "INFO"}))
        self.state = ClusterState([self.zk.address], session_timeout=10)
        self.state.start(timeout=30)
        for i in range(nimbuses):
            self.start_nimbus(i)
        for i in range(len(self.slot_bases)):
            self.start_supervisor(i)
        self.wait(lambda: len(self.state.supervisors()) == len(self.slot_bases), message="supervisors")
        self.wait(lambda: self.cli("list").returncode == 0, message="nimbus")
        return self

    def _log(self, name: str):
        return open(self.dir / f"{name}.log", "ab")

    def nimbus_addresses(self) -> str:
        return ",".join(f"{self.bind}:{p}" for p in self.nimbus_ports.values())

    def start_nimbus(self, index: int) -> None:
        self.nimbus_procs[index] = self.processes.start(
            [*STREAMGALE, "--config", str(self.config_file), "nimbus", "--host", self.bind,
             "--port", str(self.nimbus_ports[index])], stdout=self._log(f"nimbus-{index}"), stderr=subprocess.STDOUT)

    def local_dir(self, index: int) -> Path:
        return self.dir / f"supervisor-{index}"

    def host_address(self, index: int) -> str:
        return self.lab.hosts[index].address if self.lab else "127.0.0.1"

    def start_supervisor(self, index: int) -> None:
        args = [*STREAMGALE, "--config", str(self.config_file), "supervisor", "--host", self.host_address(index),
                "-c", f"network.port={self.slot_bases[index]}", "-c", f"supervisor.local_dir={self.local_dir(index)}"]
        kwargs = dict(stdout=self._log(f"supervisor-{index}"), stderr=subprocess.STDOUT, cwd=ROOT,
                      start_new_session=True)
        if self.lab:
            self.supervisor_procs[index] = self.lab.hosts[index].popen(args, **kwargs)
        else:
            self.supervisor_procs[index] = self.processes.start(args, **kwargs)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*STREAMGALE, "--config", str(self.config_file), "--nimbus", self.nimbus_addresses(),
                               *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)

    def submit(self, out: Path, total: int, rate: float) -> None:
        r = self.cli("submit", TOPOLOGY, "-c", f"test.output_dir={out}", "-c", f"test.total={total}",
                     "-c", f"test.rate={rate}")
        assert r.returncode == 0, r.stderr + self.logs()

    # -- observe --------------------------------------------------------------------------------

    def check_alive(self) -> None:
        for name, procs in (("nimbus", self.nimbus_procs), ("supervisor", self.supervisor_procs)):
            for index, proc in procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name}-{index} exited with {proc.returncode}\n{self.logs()}")

    def wait(self, predicate, timeout: float = 60, message: str = "condition"):
        def check():
            self.check_alive()
            return predicate()
        return wait_for(check, timeout=timeout, interval=0.05, message=message)

    def supervisor_id(self, index: int) -> str:
        return (self.local_dir(index) / "supervisor-id").read_text().strip()

    def workers(self) -> list[tuple[psutil.Process, str, int]]:
        """Live worker processes of this test: (process, supervisor id, port)."""
        return [(p, cmd[cmd.index("--supervisor-id") + 1], int(cmd[cmd.index("--port") + 1]))
                for p, cmd in worker_processes(self.dir)]

    def assignment(self):
        assignments = self.state.assignments()
        return next(iter(assignments.values()), None)

    def logs(self) -> str:
        return daemon_logs(self.dir, tail=3000)

    # -- faults ---------------------------------------------------------------------------------

    def kill_supervisor(self, index: int) -> None:
        proc = self.supervisor_procs.pop(index)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def kill_node(self, index: int) -> list[int]:
        """SIGKILL the supervisor and every worker it started; returns the workers' pids."""
        sid = self.supervisor_id(index)
        self.kill_supervisor(index)
        pids = []
        for p, s, _ in self.workers():
            if s == sid:
                p.kill()
                pids.append(p.pid)
        return pids

    # -- stop -----------------------------------------------------------------------------------

    def close(self) -> None:
        try:
            if self.state is not None:
                self.state.close()
            if self.lab is not None:
                self.lab.close()
            for proc in list(self.nimbus_procs.values()) + list(self.supervisor_procs.values()):
                if proc.poll() is None:
                    proc.kill()
            for p, _, _ in self.workers():
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        finally:
            self.zk.close()


# -- what every scenario checks --------------------------------------------------------------------


def acked(out: Path) -> set[int]:
    return {int(n) for f in out.glob("acks-*.txt") for n in f.read_text().split()}


def work_records(out: Path) -> list[tuple[float, int, int, int]]:
    """(time, work task, pid, n) of every tuple the work bolt processed."""
    records = []
    for f in out.glob("work-*.txt"):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                records.append((float(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])))
    return records


def recovery_after(out: Path, fault_at: float, tasks: set[int] | None, old_pids: set[int]) -> float:
    """Seconds from the fault to the first tuple processed after it by one of ``tasks``
    (None: any task) in a process other than ``old_pids``."""
    times = [t for t, task, pid, _ in work_records(out)
             if t > fault_at and (tasks is None or task in tasks) and pid not in old_pids]
    return min(times) - fault_at


def assert_healthy_end(c: FaultCluster, out: Path, total: int, timeout: float = 120) -> None:
    """Every message acked; the topology fully assigned on live nodes; one worker per slot."""
    c.wait(lambda: acked(out) >= set(range(total)), timeout=timeout,
           message=f"all {total} messages acked (have {len(acked(out))})")

    def settled():
        a = c.assignment()
        live = c.state.supervisors()
        if a is None or len(a.slots) != 4 or not all(s.supervisor_id in live for s in a.slots.values()):
            return False
        per_slot = Counter((sid, port) for _, sid, port in c.workers())
        return per_slot and max(per_slot.values()) == 1 and set(per_slot) == {
            (s.supervisor_id, s.port) for s in a.slots.values()}
    c.wait(settled, timeout=60, message="4 workers on live nodes, one per assigned slot")
