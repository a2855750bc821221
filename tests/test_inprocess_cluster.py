"""Nimbus and supervisor decision paths, tested through a whole cluster in one process.

The real daemons run in threads over an in-memory ZooKeeper (each daemon its
own session) with workers as threads on ZeroMQ inproc sockets
(:mod:`streamgale.dev.inprocess`): kill, rebalance, activate/deactivate,
reassignment after a lost node, leader change and pending actions take
seconds, and every wait is a bounded poll.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from streamgale import client as sg
from streamgale.cluster.records import KILLED
from streamgale.dev.inprocess import InProcessCluster

sys.path.insert(0, str(Path(__file__).parent / "topologies"))
import cluster_word_count as wc  # noqa: E402

TOPOLOGY = str(Path(__file__).parent / "topologies" / "cluster_word_count.py")


def counts(out: Path) -> Counter:
    """The final count of each word over every sink file (the highest count seen per word)."""
    best: Counter = Counter()
    for f in out.glob("sink-*.txt"):
        for line in f.read_text().splitlines():
            word, count = line.split()[:2]
            best[word] = max(best[word], int(count))
    return best


@pytest.fixture
def cluster(tmp_path):
    with InProcessCluster(supervisors=2, slots=2, directory=tmp_path / "cluster") as c:
        c.wait(lambda: c.leader() is not None and len(c.leader().state.supervisors()) == 2, message="ready")
        yield c


def submit(c: InProcessCluster, out: Path, sentences: int, **config) -> str:
    return sg.submit(TOPOLOGY, name="wc", nimbus=f"127.0.0.1:{c.nimbus_ports[0]}",
                     config={"topology.workers": 2, "test.output_dir": str(out), "test.sentences": sentences,
                             **config})


def assignment(c: InProcessCluster, tid: str):
    return c.leader().state.assignment(tid)


def test_submit_runs_exact_counts_then_kill_removes_everything(cluster, tmp_path):
    out = tmp_path / "out"
    tid = submit(cluster, out, 300)
    cluster.wait(lambda: len(cluster.workers()) == 2, message="two workers")
    cluster.wait(lambda: counts(out) == wc.expected_counts(300), message="exact counts")
    with cluster.client() as client:
        client.kill("wc", wait=0)
    cluster.wait(lambda: not cluster.workers(), message="workers stopped")
    state = cluster.leader().state
    cluster.wait(lambda: state.topology(tid) is None and state.assignment(tid) is None, message="removed")


def test_workers_hold_no_cluster_state_session(cluster, tmp_path):
    submit(cluster, tmp_path / "out", 10)
    cluster.wait(lambda: len(cluster.workers()) == 2, message="two workers")
    assert set(cluster.storages) == {"nimbus-0", "supervisor-0", "supervisor-1"}
    assert len(cluster.zookeeper._sessions) == 3  # nimbus and two supervisors: no worker has a session


def test_deactivate_reaches_the_workers_and_activate_resumes(cluster, tmp_path):
    tid = submit(cluster, tmp_path / "out", 10)
    cluster.wait(lambda: len(cluster.workers()) == 2, message="two workers")

    def spouts_active():
        return {s.active for w in cluster.workers().values() if w.loop for s in w.loop.spouts}

    with cluster.client() as client:
        client.deactivate("wc")
        cluster.wait(lambda: spouts_active() == {False}, message="spouts stopped")
        client.activate("wc")
        cluster.wait(lambda: spouts_active() == {True}, message="spouts resumed")
    assert cluster.leader().state.topology(tid).status == "ACTIVE"


def test_rebalance_moves_to_four_workers_after_its_wait(cluster, tmp_path):
    tid = submit(cluster, tmp_path / "out", 10)
    cluster.wait(lambda: assignment(cluster, tid) and len(assignment(cluster, tid).slots) == 2, message="2 slots")
    with cluster.client() as client:
        client.rebalance("wc", wait=0, workers=4)
    cluster.wait(lambda: len(assignment(cluster, tid).slots) == 4, message="4 slots")
    # The spouts stay paused until every new slot beats with its new executors, then resume.
    state = cluster.leader().state
    rec = cluster.wait(lambda: (lambda r: r if r.status == "ACTIVE" else None)(state.topology(tid)),
                       message="ACTIVE again once the new placement runs")
    assert rec.workers == 4 and rec.pending is None
    beats = cluster.leader().worker_executors[tid]
    assert all(beats.get(slot) == sorted(s.executors) for slot, s in assignment(cluster, tid).slots.items())


def test_a_lost_node_has_its_executors_moved_to_the_other(cluster, tmp_path):
    out = tmp_path / "out"
    tid = submit(cluster, out, 200)
    cluster.wait(lambda: assignment(cluster, tid) and len({s.supervisor_id for s in
                                                          assignment(cluster, tid).slots.values()}) == 2,
                 message="spread over both nodes")
    lost = cluster.supervisors[0].id
    cluster.lose_node(0)
    cluster.wait(lambda: {s.supervisor_id for s in assignment(cluster, tid).slots.values()} ==
                 {cluster.supervisors[1].id}, message="executors moved off the lost node")
    cluster.wait(lambda: len(cluster.workers()) == 2, message="two workers on the live node")
    assert lost not in cluster.leader().state.supervisors()


def test_a_new_leader_gives_absent_supervisors_a_session_timeout_to_reregister(cluster, tmp_path):
    # As when ZooKeeper comes back after an outage: nimbus's session and a supervisor's have
    # expired; nimbus leads again before that supervisor has re-registered.
    tid = submit(cluster, tmp_path / "out", 200)
    cluster.wait(lambda: assignment(cluster, tid) and len({s.supervisor_id for s in
                                                          assignment(cluster, tid).slots.values()}) == 2,
                 message="spread over both nodes")
    before = assignment(cluster, tid)
    leader, absent = cluster.leader(), cluster.supervisors[1].id
    cluster.storages["nimbus-0"].expire_session(reconnect=False)
    cluster.wait(lambda: not leader.is_leader, message="leadership lost with the session")
    cluster.storages["supervisor-1"].expire_session(reconnect=False)
    cluster.storages["nimbus-0"].reconnect()
    cluster.wait(lambda: leader.is_leader and leader.reconciled_at is not None
                 and leader.reconciled_at > leader.leader_since, message="the new leader reconciled")
    assert absent not in leader.supervisors
    assert assignment(cluster, tid).version == before.version  # nothing moved at once
    # The grace is bounded: a supervisor that does not come back has its executors moved.
    cluster.wait(lambda: {s.supervisor_id for s in assignment(cluster, tid).slots.values()} ==
                 {cluster.supervisors[0].id}, timeout=30, message="executors moved after the grace")
    assert leader.clock() - leader.leader_since >= leader.config["zookeeper.session_timeout"]


def test_a_pending_kill_is_finished_by_the_standby_that_takes_over(tmp_path):
    with InProcessCluster(supervisors=1, slots=2, nimbuses=2, directory=tmp_path / "cluster") as c:
        c.wait(lambda: c.leader() is not None, message="a leader")
        first = c.nimbuses.index(c.leader())
        tid = submit(c, tmp_path / "out", 10, **{"topology.workers": 1})
        c.wait(lambda: len(c.workers()) == 1, message="the worker")
        with c.client() as client:
            client.kill("wc", wait=3600)  # pending for an hour: only the record knows
        state = c.leader().state
        c.wait(lambda: state.topology(tid).status == KILLED and state.topology(tid).pending, message="pending")
        c.stop_nimbus(first)  # its session closes: the standby leads
        c.wait(lambda: c.leader() is not None, message="the standby leads")
        leader = c.leader()
        leader.state.update_topology(tid, lambda r: r.with_(pending={**r.pending, "at": 0}))  # the hour is up
        c.wait(lambda: leader.state.topology(tid) is None, message="the new leader finished the kill")
        c.wait(lambda: not c.workers(), message="the worker stopped")


def test_a_deposed_leader_stops_scheduling_while_its_session_is_suspended(cluster, tmp_path):
    leader = cluster.leader()
    cluster.storages["nimbus-0"].drop_connection(reconnect=False)
    cluster.wait(lambda: not leader.is_leader, message="leadership dropped while SUSPENDED")
    with cluster.client(timeout=2) as client:
        with pytest.raises(sg.NimbusError):
            client.kill("nothing", wait=0)
    cluster.storages["nimbus-0"].reconnect()
    cluster.wait(lambda: leader.is_leader, message="leader again once verified")


def test_slow_user_code_does_not_get_a_worker_killed(tmp_path):
    """Heartbeats come from the heartbeat thread, so slow next_tuple/process calls (80 ms and 25 ms)
    keep the worker alive for more than twice the supervisor's heartbeat timeout (2.5 s here; beats
    come every second)."""
    config = {"supervisor.worker_timeout": 2.5}
    with InProcessCluster(supervisors=1, slots=1, config=config, directory=tmp_path / "cluster") as c:
        c.wait(lambda: c.leader() is not None and c.leader().state.supervisors(), message="ready")
        sg.submit(str(Path(__file__).parent / "topologies" / "slow.py"), name="slow",
                  nimbus=f"127.0.0.1:{c.nimbus_ports[0]}", config={"topology.workers": 1})
        [(wid, worker)] = c.wait(lambda: [(i, w) for i, w in c.workers().items() if w.loop and w.loop.started],
                                 message="the worker, started")
        bolt = next(e for e in worker.loop.bolts if e.component == "slow-bolt")

        def executed() -> int:
            return sum(r.collector.executed for r in bolt.runners)

        c.wait(lambda: executed() >= 60, timeout=30, message="60 tuples from the 80 ms spouts (6+ s: one thread)")
        assert list(c.workers()) == [wid]  # never restarted
        assert c.supervisors[0].slots[6700].phase == "RUNNING"


def test_a_worker_whose_heartbeats_stop_has_its_executors_moved_by_nimbus(tmp_path):
    """Liveness through the supervisors' reports: the worker's heartbeat thread stops (its process
    would be alive but mute), its supervisor (patient here) keeps forwarding the last beat, nimbus
    sees the beat sequence stand still for nimbus.task_timeout and moves the slot's executors."""
    config = {"nimbus.task_timeout": 2.0, "supervisor.worker_timeout": 60.0}
    with InProcessCluster(supervisors=2, slots=2, config=config, directory=tmp_path / "cluster") as c:
        c.wait(lambda: c.leader() is not None and len(c.leader().state.supervisors()) == 2, message="ready")
        tid = submit(c, tmp_path / "out", 10, **{"topology.workers": 1})
        [worker] = c.wait(lambda: assignment(c, tid) and [w for w in c.workers().values() if w.heartbeat],
                          message="one worker, beating")
        [slot] = assignment(c, tid).slots
        c.wait(lambda: tid in c.leader().worker_beats, message="nimbus to hear its beats")
        worker.heartbeat.close()  # mute: no more beats, the loop goes on
        c.wait(lambda: assignment(c, tid) and slot not in assignment(c, tid).slots, timeout=15,
               message="the mute slot's executors moved")
        assert slot in c.leader().liveness.dead  # kept out of scheduling for a while
