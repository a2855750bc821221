"""Workers hold no ZooKeeper session, and a slow component is slow, not dead.

Units: the local channel's codec, the supervisor's control versions, the
heartbeat thread's slow-component report (injected clock), the transport's
bound on tuples per frame. One real-cluster test: with a 4-worker topology on
two supervisors, every ZooKeeper connection belongs to nimbus, a supervisor
or the test itself.
"""

from __future__ import annotations

import queue
import socket
import time
from pathlib import Path

import msgpack
import psutil
import pytest
import zmq
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT
from streamgale.supervisor.daemon import control_for
from streamgale.worker.heartbeat import Heartbeat
from streamgale.worker.transport import Inbound, Transport

from streamgale.cluster.records import Assignment, Loss, SlotAssignment, TopologyRecord
from streamgale.tuples import Tuple
from streamgale.wire import channel
from streamgale.wire.frames import FRAME_VERSION, TUPLES

RECORD = TopologyRecord("wc-1", "wc", "ACTIVE", {"components": {}}, {}, "d1", "wc.py", 1, {}, 0.0)
ASSIGNMENT = Assignment("wc-1", "d1", {"s:1": SlotAssignment("s", "h", 1, (("count", (1, 2)),))}, 0.0, 3)


def test_channel_messages_round_trip_and_bad_frames_name_the_field():
    beat = channel.WorkerBeat("wc-1", 6700, 42, 7, (("count", (1, 2)),), 9, 1.5)
    assert channel.decode(channel.encode(beat)) == beat
    control = control_for(RECORD, ASSIGNMENT)
    assert channel.decode(channel.encode(control)) == control
    assert channel.assignment_from_dict(control.assignment) == ASSIGNMENT
    with pytest.raises(channel.ChannelError, match="heartbeat: field 'seq' must be an integer, got str"):
        channel.decode(msgpack.packb({**beat.to_dict(), "v": 1, "kind": "heartbeat", "seq": "7"}))
    with pytest.raises(channel.ChannelError, match="unknown channel message kind 'nope'"):
        channel.decode(msgpack.packb({"v": 1, "kind": "nope"}))
    with pytest.raises(channel.ChannelError, match="not valid msgpack"):
        channel.decode(b"\xc1garbage")


def test_control_version_changes_with_status_log_levels_and_assignment_only():
    base = control_for(RECORD, ASSIGNMENT)
    assert control_for(RECORD, ASSIGNMENT).version == base.version
    assert control_for(RECORD.with_(status="INACTIVE"), ASSIGNMENT).version != base.version
    assert control_for(RECORD.with_(log_levels={"x": "DEBUG"}), ASSIGNMENT).version != base.version
    moved = Assignment("wc-1", "d1", ASSIGNMENT.slots, 0.0, 4)
    assert control_for(RECORD, moved).version != base.version
    assert control_for(RECORD.with_(name="other-name"), ASSIGNMENT).version == base.version
    gone = control_for(None, ASSIGNMENT)
    assert gone.assignment is None and gone.version != base.version
    lost = control_for(RECORD, ASSIGNMENT, loss=Loss(1, "s:1", "worker died", 5.0, 3))  # its spouts must hear
    assert lost.version != base.version and (lost.losses, lost.loss_assignment) == (1, 3) and base.losses == 0
    assert channel.decode(channel.encode(lost)) == lost
    with pytest.raises(channel.ChannelError, match="control: field 'losses' must be an int"):
        channel.decode(msgpack.packb({**lost.to_dict(), "v": 1, "kind": "control", "losses": "1"}))


class FakeRunner:
    def __init__(self, task, executed, busy):
        self.task = task
        self.collector = type("C", (), {"executed": executed, "busy": busy})()


class FakeExecutor:
    component = "slow-bolt"
    runners = [FakeRunner(3, 40, 1.0)]

    def tasks(self):
        return [3]


class FakeLoop:
    running = None
    running_since = 0.0


def test_a_component_stuck_in_user_code_is_reported_slow_once_per_interval():
    now = [100.0]
    loop = FakeLoop()
    hb = Heartbeat(zmq.Context.instance(), "inproc://unused", b"1", lambda: None, dict, queue.SimpleQueue(),
                   loop, ("h", 6700), slow_after=5.0, slow_every=30.0, clock=lambda: now[0])
    hb._check_slow(now[0])
    assert hb.errors.empty()
    loop.running, loop.running_since = FakeExecutor(), 100.0
    now[0] = 104.9
    hb._check_slow(now[0])
    assert hb.errors.empty()  # not yet
    now[0] = 106.0
    hb._check_slow(now[0])
    record = hb.errors.get_nowait()
    assert record.component == "slow-bolt" and record.task == 3
    assert record.message.startswith("SlowComponent: component 'slow-bolt' (tasks [3]) has been in one call of "
                                     "its user code for 6.0 s; execute latency 25.0 ms per tuple over 40 tuples")
    now[0] = 120.0
    hb._check_slow(now[0])
    assert hb.errors.empty()  # once per 30 s
    now[0] = 136.5
    hb._check_slow(now[0])
    assert not hb.errors.empty()


def test_a_frame_claiming_more_tuples_than_the_bound_is_dropped_and_counted():
    ctx = zmq.Context.instance()
    got = []
    inbound = Inbound({1: got.append}, {1: "count", 2: "split"}, {"split": {"default": {"word": 0}}})
    t = Transport(ctx, 1, inbound, batch_size=10, scheme="inproc", host="frame-bound-test")
    try:
        assert t.max_tuples == 1024
        ok = msgpack.packb([FRAME_VERSION, TUPLES, [[1, 2, "default", [["a"]] * 1000, None, None, None]]])
        assert t._deliver(ok) == 1000
        huge = msgpack.packb([FRAME_VERSION, TUPLES, [[1, 2, "default", [["a"]] * 100_000, None, None, None]]])
        assert t._deliver(huge) == 0
        split = msgpack.packb([FRAME_VERSION, TUPLES, [[1, 2, "default", [["b"]] * 1000, None, None, None]] * 3])
        assert t._deliver(split) == 1000  # the first group fits; the next two would pass the bound
        assert (t.dropped_frames, t.dropped_entries) == (1, 2)
        assert len(got) == 2000
    finally:
        t.close()


def test_tuples_waiting_for_a_peer_whose_tasks_moved_are_sent_on_to_where_they_run_now():
    """Issue 20: a peer that is gone refuses frames (they wait in the outbox); when the assignment
    moves its tasks, what waited for it is handed to the tasks' new sinks, not dropped."""
    ctx = zmq.Context.instance()
    inbound = Inbound({}, {1: "count", 2: "split"}, {"split": {"default": {"word": 0}}})
    t = Transport(ctx, 0, inbound, batch_size=2, bind_host="127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nobody listens there
    try:
        sink = t.sink(1, gone)  # no connection completes, so every frame is refused
        for w in "abcde":  # two full batches refused, one tuple still batched
            sink(Tuple([w], "default", "split", 2, {"word": 0}, None, 7, 9))
        assert t.congested()
        left = t.retarget(set())
        assert not t.congested() and len(left) == 3
        moved: list[Tuple] = []
        assert t.redeliver(left, {1: moved.append}) == 5
        assert [(m.values, m.source_task, m.root, m.edge) for m in moved] == [([w], 2, 7, 9) for w in "abcde"]
    finally:
        t.close()


@pytest.mark.slow
def test_zookeeper_clients_are_nimbus_and_supervisors_only(cluster, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    r = cluster.cli("submit", str(ROOT / "tests" / "topologies" / "cluster_word_count.py"),
                    "-c", f"test.output_dir={out}", "-c", "topology.workers=4", "-c", "test.sentences=100000",
                    "-c", "test.rate=50")
    assert r.returncode == 0, r.stderr
    cluster.wait(lambda: len(cluster.worker_processes()) == 4, timeout=60, message="4 workers")
    zk_port = int(cluster.zookeeper_address.rsplit(":", 1)[1])

    def client_pids() -> set[int]:
        return {c.pid for c in psutil.net_connections("tcp")
                if c.raddr and c.raddr.port == zk_port and c.status == psutil.CONN_ESTABLISHED and c.pid}

    daemons = {p.pid for p in [*cluster.nimbus_procs.values(), *cluster.supervisor_procs.values()]}
    workers = {p.pid for p in cluster.worker_processes()}
    pids = client_pids()
    assert pids & workers == set()
    assert daemons <= pids  # nimbus and both supervisors hold sessions ...
    assert pids - {psutil.Process().pid} == daemons  # ... and nobody else but the test itself


def test_a_loss_fails_the_trees_once_the_worker_runs_the_assignment_that_moved_the_lost_worker():
    """Issue 20: the loss and the assignment that moves the lost worker's executors reach a worker
    in either order; replays sent before it re-points would follow the trees to the dead address."""
    from streamgale.worker.daemon import loss_step

    assert loss_step(None, None, 4, 9, 9) == (4, None, False)  # the first control: where counting starts
    assert loss_step(4, None, 4, 9, 9) == (4, None, False)  # nothing new
    assert loss_step(4, None, 5, 10, 9) == (5, 10, False)  # lost, but still on the old assignment: wait
    assert loss_step(5, 10, 5, 10, 10) == (5, None, True)  # re-pointed: fail them now
    assert loss_step(5, None, 6, 10, 10) == (6, None, True)  # relaunched in place: at once
    assert loss_step(6, 12, 7, 11, 11) == (7, 12, False)  # two losses: the newer assignment decides


def test_with_checkpointed_state_a_loss_fails_only_the_checkpoint_spouts_trees():
    """A user tree of a stateful topology may hold effects that still commit (acks on their way,
    or a prepared transaction that a retried COMMIT completes): failing it early would replay
    what commits, twice in the state and in a commit sink (a CI run wrote an entry twice)."""
    from types import SimpleNamespace

    from streamgale.worker.daemon import failed_early

    from streamgale.wire.spec import CHECKPOINT

    user, checkpoint = SimpleNamespace(component="entries"), SimpleNamespace(component=CHECKPOINT)
    assert failed_early([user, checkpoint], checkpointed=True) == [checkpoint]
    assert failed_early([user], checkpointed=True) == []  # the checkpoint spout runs elsewhere
    assert failed_early([user], checkpointed=False) == [user]
