"""A cluster for fault injection: every supervisor on a host of its own.

ZooKeeper and nimbus run in the root namespace, bound to the lab bridge's
address; each supervisor (and the workers it starts) runs in its own network
namespace with its own address, so a node can be cut off with iptables. Where
namespaces are unavailable (not root, no iptables) the supervisors share
loopback and the partition scenario is skipped, saying why.

Processes are ``streamgale.dev.cluster.ProcessCluster``'s: each supervisor is
started behind its host's ``ip netns exec`` prefix. Everything is torn down at
the end, even when the test fails: daemons and workers (found by the test
directory in their command line) by the cluster, then the namespaces.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import psutil
from conftest import ROOT, Processes
from netns import NetLab, unavailable_reason

from streamgale.cluster.state import ClusterState
from streamgale.cluster.zk_storage import ZkStorage
from streamgale.dev.cluster import ProcessCluster, SupervisorNode, find_workers
from streamgale.dev.zookeeper_server import ZooKeeperServer

TOPOLOGY = str(ROOT / "tests" / "topologies" / "durable.py")
SLOT_BASE = 6700  # inside namespaces every host has its own ports


class FaultCluster(ProcessCluster):
    """``supervisors`` nodes of ``slots`` slots; ``processes`` is accepted for the fixture's
    sake and not used (the cluster owns its processes)."""

    def __init__(self, tmp_path: Path, processes: Processes | None = None, supervisors: int = 3, slots: int = 2):
        self.netns_reason = unavailable_reason()
        self.lab = NetLab(supervisors) if self.netns_reason is None else None
        self.bind = self.lab.bridge_address if self.lab else "127.0.0.1"
        # Without namespaces: loopback nodes on free ports, the cluster's default.
        nodes = ([SupervisorNode(h.address, SLOT_BASE, tuple(h.command([]))) for h in self.lab.hosts]
                 if self.lab else None)
        self.state: ClusterState | None = None
        try:
            super().__init__(tmp_path, supervisors=supervisors, slots=slots, nodes=nodes, host=self.bind, cwd=ROOT)
        except BaseException:
            if self.lab is not None:
                self.lab.close()
            raise

    @property
    def zk(self) -> ZooKeeperServer:
        """The cluster's own ZooKeeper, which scenarios stop and start."""
        return self.zookeeper

    # -- start ----------------------------------------------------------------------------------

    def start(self, nimbuses: int = 1) -> FaultCluster:
        self.start_zookeeper()
        self.state = ClusterState(ZkStorage([self.zk.address], session_timeout=10))
        self.state.start(timeout=30)
        super().start(nimbuses)
        return self

    def host_address(self, index: int) -> str:
        return self.nodes[index].host

    def submit(self, out: Path, total: int, rate: float, *extra: str) -> None:
        r = self.cli("submit", TOPOLOGY, "-c", f"test.output_dir={out}", "-c", f"test.total={total}",
                     "-c", f"test.rate={rate}", *extra)
        assert r.returncode == 0, r.stderr + self.logs()

    # -- observe --------------------------------------------------------------------------------

    def wait(self, predicate, timeout: float = 60, message: str = "condition"):
        return super().wait(predicate, timeout=timeout, message=message)

    def supervisor_id(self, index: int) -> str:
        return (self.local_dir(index) / "supervisor-id").read_text().strip()

    def workers(self) -> list[tuple[psutil.Process, str, int]]:
        """Live worker processes of this test: (process, supervisor id, port)."""
        return [(p, cmd[cmd.index("--supervisor-id") + 1], int(cmd[cmd.index("--port") + 1]))
                for p, cmd in find_workers(self.dir)]

    def assignment(self):
        assignments = self.state.assignments()
        return next(iter(assignments.values()), None)

    def logs(self, tail: int = 3000) -> str:
        return super().logs(tail)

    # -- faults ---------------------------------------------------------------------------------

    def kill_supervisor(self, index: int) -> None:
        self.stop_supervisor(index)

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
        finally:
            try:
                super().close()
            finally:
                if self.lab is not None:
                    self.lab.close()


# -- what every scenario checks --------------------------------------------------------------------


def _timed(out: Path, pattern: str) -> dict[int, float]:
    """Message -> the earliest time in the "n time" lines of the files matching ``pattern``."""
    first: dict[int, float] = {}
    for f in out.glob(pattern):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                n, t = int(parts[0]), float(parts[1])
                first[n] = min(t, first.get(n, t))
    return first


def acked(out: Path) -> set[int]:
    return set(_timed(out, "acks-*.txt"))


def ack_times(out: Path) -> dict[int, float]:
    """Message -> when the spout was first told it was acked (wall clock)."""
    return _timed(out, "acks-*.txt")


def slowest_messages(out: Path, count: int = 3) -> list[tuple[float, int]]:
    """The ``count`` longest (seconds from first emit to first ack, message): what a stall costs
    the data it hit."""
    emitted, acks = _timed(out, "emits-*.txt"), ack_times(out)
    return sorted(((acks[n] - t, n) for n, t in emitted.items() if n in acks), reverse=True)[:count]


def longest_ack_gap(out: Path, since: float) -> float:
    """The longest stretch with no new ack from ``since`` to the last ack."""
    times = sorted([since] + [t for t in ack_times(out).values() if t > since])
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


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
