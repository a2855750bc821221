"""Checkpointed state (docs/state.md): exact counts through rollbacks and worker kills.

In-process tests drive the protocol in local mode with the memory and SQLite
backends; the cluster tests run real workers against a real redis-server and
kill -9 the worker holding counts twice mid-run.
"""

from __future__ import annotations

import collections
import json
import signal
import time
from typing import Any

import psutil
import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT

from streamgale import Bolt, Config, LocalCluster, Topology
from streamgale.reliable import ReliableSpout
from streamgale.state import StateError, StatefulBolt, committed_state
from streamgale.state.checkpoint import CHECKPOINT
from streamgale.topology import TopologyError

SENTENCES = [f"w{i % 7} w{i % 3} w{i % 5} w{i % 11}" for i in range(400)]
TRUTH = collections.Counter(w for s in SENTENCES for w in s.split())


class Sentences(ReliableSpout):
    outputs = ["sentence"]

    def open(self, context):
        self.todo = [(i, [s]) for i, s in enumerate(SENTENCES)]
        self.todo.reverse()

    def next_message(self):
        return self.todo.pop() if self.todo else None


class Split(Bolt):
    outputs = ["word"]

    def process(self, tup):
        for w in tup.values[0].split():
            self.emit([w])


class Count(StatefulBolt):
    outputs = ["word", "count"]
    events: list[tuple[int, str]] = []  # (task, hook) of every task in this process

    def prepare(self, context):
        self.task = context.task_id

    def process(self, tup):
        w = tup.values[0]
        self.state[w] = self.state.get(w, 0) + 1
        self.emit([w, self.state[w]])

    def pre_rollback(self):
        Count.events.append((self.task, "rollback"))


class FailFirstPrepare(Count):
    """Raises in its first pre_prepare (one task): a failure between PREPARE and COMMIT."""

    failed_once = False

    def pre_prepare(self, txid):
        if not FailFirstPrepare.failed_once and self.task == min(self.context_tasks):
            FailFirstPrepare.failed_once = True
            raise RuntimeError("injected failure in pre_prepare")

    def prepare(self, context):
        super().prepare(context)
        self.context_tasks = context.tasks_of(context.component)


def word_count(count=Count, name="swc") -> Topology:
    t = Topology(name)
    t.spout("sentences", Sentences)
    t.bolt("split", Split, parallelism=2).shuffle("sentences")
    t.bolt("count", count, parallelism=3).fields("split", "word")
    return t


def run_until_acked(topology: Topology, config: Config, timeout: float = 30) -> tuple[LocalCluster, Any]:
    cluster = LocalCluster(topology, config)
    [spout] = [r.instance for e in cluster.loop.spouts for r in e.runners if isinstance(r.instance, Sentences)]
    result = cluster.run(duration=timeout, until=lambda: getattr(spout, "acked", 0) == len(SENTENCES))
    assert spout.acked == len(SENTENCES), (spout.acked, result.errors)
    return cluster, spout


def merged(state: dict[int, dict]) -> dict:
    out: dict = {}
    for task_state in state.values():
        assert not set(out) & set(task_state)  # fields grouping: each word on one task
        out.update(task_state)
    return out


def local_config(**settings) -> Config:
    return Config().merged({"topology.state.checkpoint_interval": 0.05, **settings}, "test")


def committed(topology: Topology, config: Config, name="swc") -> dict:
    tasks = topology.with_checkpointing(config).task_ids()["count"]
    return merged(committed_state(name, "count", tasks, config))


# -- local mode --------------------------------------------------------------------------------


def test_stateful_word_count_commits_exact_counts_and_acks_every_sentence(tmp_path):
    config = local_config(**{"topology.state.backend": "sqlite",
                             "topology.state.sqlite.path": str(tmp_path / "state.sqlite")})
    topology = word_count()
    cluster, spout = run_until_acked(topology, config)
    assert spout.acked == len(SENTENCES) and spout.pending_count == 0
    # Everything acked was committed first: the committed state is the truth, exactly.
    assert committed(topology, config) == dict(TRUTH)
    assert CHECKPOINT in cluster.topology.components


def test_state_survives_a_restart_and_goes_on_counting(tmp_path):
    config = local_config(**{"topology.state.backend": "sqlite",
                             "topology.state.sqlite.path": str(tmp_path / "state.sqlite")})
    run_until_acked(word_count(), config)
    run_until_acked(word_count(), config)  # a new process would see the same file
    assert committed(word_count(), config) == {w: 2 * n for w, n in TRUTH.items()}


def test_a_failure_between_prepare_and_commit_rolls_back_and_replays_exactly(tmp_path):
    Count.events = []
    config = local_config(**{"topology.state.backend": "sqlite",
                             "topology.state.sqlite.path": str(tmp_path / "state.sqlite")})
    topology = word_count(FailFirstPrepare)
    cluster, spout = run_until_acked(topology, config)
    assert FailFirstPrepare.failed_once
    assert any(e == "injected failure in pre_prepare" for e in (str(x.error) for x in cluster.errors))
    assert {hook for _, hook in Count.events} == {"rollback"}  # every task rolled back
    assert len({task for task, _ in Count.events}) == 3
    assert spout.replayed > 0  # the rolled-back inputs were failed and sent again
    assert committed(topology, config) == dict(TRUTH)


def test_init_state_gets_the_committed_state_before_any_tuple(tmp_path):
    seen: list[tuple[str, int]] = []

    class Recording(Count):
        def init_state(self, state):
            super().init_state(state)
            seen.append(("init", len(state)))

        def process(self, tup):
            if not seen or seen[-1][0] != "tuple":
                seen.append(("tuple", len(self.state)))
            super().process(tup)

    config = local_config(**{"topology.state.backend": "sqlite",
                             "topology.state.sqlite.path": str(tmp_path / "state.sqlite")})
    run_until_acked(word_count(), config)
    seen.clear()
    run_until_acked(word_count(Recording), config)
    inits = [n for kind, n in seen if kind == "init"]
    assert len(inits) == 3 and sum(inits) == len(TRUTH)  # each task got its committed words
    assert seen[0][0] == "init"


# -- validation --------------------------------------------------------------------------------


def test_checkpoint_interval_must_be_below_the_message_timeout():
    config = Config().merged({"topology.state.checkpoint_interval": 30, "topology.message_timeout": 30}, "test")
    with pytest.raises(TopologyError) as e:
        LocalCluster(word_count(), config)
    assert str(e.value) == (
        "topology.state.checkpoint_interval (30 s) must be below topology.message_timeout (30 s): inputs wait "
        "for a checkpoint's commit to be acked; lower the interval or raise the timeout")


def test_stateful_bolts_need_acking():
    config = Config().merged({"topology.acker_executors": 0}, "test")
    with pytest.raises(TopologyError) as e:
        LocalCluster(word_count(), config)
    assert str(e.value) == ("stateful bolts ('count') need acking, but topology.acker_executors is 0; remove "
                            "that setting or set it to 1 or more")


def test_an_unknown_backend_names_the_setting_and_the_choices():
    from streamgale.config import ConfigError

    with pytest.raises(ConfigError) as e:
        Config().merged({"topology.state.backend": "cassandra"}, "test")
    assert str(e.value) == ("config key 'topology.state.backend' in test must be one of memory, sqlite, redis, "
                            "got 'cassandra'")


def test_an_unreachable_redis_fails_at_start_naming_the_setting():
    from streamgale.dev.ports import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    config = local_config(**{"topology.state.backend": "redis", "topology.state.redis.url": url})
    started = time.monotonic()
    with pytest.raises(StateError) as e:
        LocalCluster(word_count(), config)
    assert time.monotonic() - started < 10
    assert "topology.state.redis.url" in str(e.value) and url in str(e.value)


def test_a_stateless_topology_gets_no_checkpointing():
    t = Topology("plain")
    t.spout("sentences", Sentences)
    t.bolt("split", Split).shuffle("sentences")
    assert t.with_checkpointing(Config()) is t


# -- a real cluster with Redis -----------------------------------------------------------------

TOPOLOGY = str(ROOT / "tests" / "topologies" / "stateful.py")
TOTAL = 1500
RATE = 100


def acked_ids(out) -> set[int]:
    return {int(n) for f in out.glob("acks-*.txt") for n in f.read_text().split()}


def count_workers(cluster, cluster_state) -> list[psutil.Process]:
    """Live workers running count tasks and not the spout (so its ack log stays whole)."""
    [assignment] = cluster_state.assignments().values()
    wanted = set()
    for slot_id, slot in assignment.slots.items():
        comps = {c for c, _ in slot.executors}
        if "count" in comps and "sentences" not in comps:
            wanted.add(slot_id)
    found = []
    for p in cluster.worker_processes():
        cmd = p.cmdline()
        slot_id = f"{cmd[cmd.index('--supervisor-id') + 1]}:{cmd[cmd.index('--port') + 1]}"
        if slot_id in wanted:
            found.append(p)
    return found


def submit_stateful(cluster, out, redis_url) -> None:
    result = cluster.cli("submit", TOPOLOGY, "-c", f"test.output_dir={out}", "-c", f"test.total={TOTAL}",
                         "-c", f"test.rate={RATE}", "-c", "topology.state.backend=redis",
                         "-c", f"topology.state.redis.url={redis_url}")
    assert result.returncode == 0, result.stderr + cluster.logs()


def assert_exact_committed_counts(cluster, cluster_state, out, redis_url) -> None:
    """Every sentence acked, and then the committed counts equal the truth, exactly."""
    cluster.wait(lambda: acked_ids(out) == set(range(TOTAL)), timeout=180, message="every sentence acked")
    config = Config().merged({"topology.state.backend": "redis", "topology.state.redis.url": redis_url}, "test")
    tasks = _count_tasks(cluster_state)
    truth = dict(_topology_module().expected_counts(TOTAL))
    last: dict = {}

    def exact():
        last.clear()
        last.update(merged(committed_state("stateful-wc", "count", tasks, config)))
        return last == truth
    try:
        cluster.wait(exact, timeout=30, message="committed counts equal to the truth")
    except Exception:
        off = {w: last.get(w, 0) - n for w, n in truth.items() if last.get(w, 0) != n}
        raise AssertionError(f"committed minus truth, for the words that differ: {off}") from None


def recovered_after(cluster, out, acked_before: int) -> float:
    """Seconds until the spout's acks move on again (50 more sentences) after a fault."""
    at = time.monotonic()
    cluster.wait(lambda: len(acked_ids(out)) >= min(TOTAL, acked_before + 50), timeout=90,
                 message="acks moving again after the fault")
    return time.monotonic() - at


@pytest.mark.slow
def test_worker_holding_counts_killed_twice_changes_no_committed_count(cluster, cluster_state, redis_url,
                                                                       tmp_path):
    out = tmp_path / "out"
    submit_stateful(cluster, out, redis_url)
    killed: set[int] = set()
    for at in (TOTAL // 5, TOTAL // 2):  # mid-run, twice; the second after the first recovered
        cluster.wait(lambda: len(acked_ids(out)) >= at, timeout=90, message=f"{at} sentences acked")
        victims = cluster.wait(lambda: [p for p in count_workers(cluster, cluster_state) if p.pid not in killed],
                               timeout=60, message="a live worker with count tasks")
        killed.add(victims[0].pid)
        acked = len(acked_ids(out))
        victims[0].send_signal(signal.SIGKILL)
        print(f"\nRECOVERY stateful worker kill -9: {recovered_after(cluster, out, acked):.2f} s")
    assert len(killed) == 2
    assert_exact_committed_counts(cluster, cluster_state, out, redis_url)
    assert not killed & {p.pid for p in cluster.worker_processes()}  # both really died
    # The CLI reads the same committed state.
    shown = cluster.cli("state", "stateful-wc", "count")
    assert shown.returncode == 0, shown.stderr
    printed = json.loads(shown.stdout)
    assert sorted(int(t) for t in printed) == _count_tasks(cluster_state)
    assert merged(printed) == dict(_topology_module().expected_counts(TOTAL))
    wrong = cluster.cli("state", "stateful-wc", "split", "--task", "99")
    assert wrong.returncode != 0 and "component 'split' has tasks" in wrong.stderr


@pytest.mark.slow
def test_a_rebalance_keeps_every_count(cluster, cluster_state, redis_url, tmp_path):
    out = tmp_path / "out"
    submit_stateful(cluster, out, redis_url)
    cluster.wait(lambda: len(acked_ids(out)) >= TOTAL // 4, timeout=90, message="a quarter acked")
    before = {p.pid for p in cluster.worker_processes()}
    result = cluster.cli("rebalance", "stateful-wc", "-w", "1", "-n", "2", "-e", "count=2")
    assert result.returncode == 0, result.stderr
    cluster.wait(lambda: len(cluster_state.assignments()) == 1
                 and len(next(iter(cluster_state.assignments().values())).slots) == 2,
                 timeout=60, message="the topology on 2 workers")
    [assignment] = cluster_state.assignments().values()
    counts = sorted(e for s in assignment.slots.values() for e in s.executors if e[0] == "count")
    assert counts == [("count", (1, 2)), ("count", (3, 4))]  # new executors, restored from committed state
    assert_exact_committed_counts(cluster, cluster_state, out, redis_url)
    assert {p.pid for p in cluster.worker_processes()} <= before  # in place: no worker was restarted


@pytest.mark.slow
def test_a_lost_node_changes_no_committed_count(tmp_path, zookeeper, zk_root, make_cluster_state, redis_url,
                                               request):
    from cluster_fixtures import Cluster

    c = Cluster(tmp_path, zookeeper.address, zk_root, supervisors=3)
    try:
        c.start()
        state = make_cluster_state()
        out = tmp_path / "out"
        submit_stateful(c, out, redis_url)
        c.wait(lambda: len(acked_ids(out)) >= TOTAL // 4, timeout=90, message="a quarter acked")
        [assignment] = state.assignments().values()
        spout_node = {s.supervisor_id for s in assignment.slots.values() if any(n == "sentences" for n, _ in s.executors)}
        counts_node = next(s.supervisor_id for s in assignment.slots.values()
                           if s.supervisor_id not in spout_node and any(n == "count" for n, _ in s.executors))
        index = next(i for i in range(3) if (c.local_dir(i) / "supervisor-id").read_text().strip() == counts_node)
        acked = len(acked_ids(out))
        c.stop_supervisor(index)  # SIGKILL: the node's supervisor...
        for p in c.worker_processes():  # ...and every worker it ran
            if f"supervisor-{index}" in " ".join(p.cmdline()):
                p.kill()
        print(f"\nRECOVERY stateful node loss: {recovered_after(c, out, acked):.2f} s")
        c.wait(lambda: all(s.supervisor_id != counts_node for a in state.assignments().values()
                           for s in a.slots.values()), timeout=60, message="executors moved off the lost node")
        assert_exact_committed_counts(c, state, out, redis_url)
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(c.logs())
        c.close()


def _topology_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stateful_topology", TOPOLOGY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _count_tasks(cluster_state) -> list[int]:
    [assignment] = cluster_state.assignments().values()
    return sorted(t for slot in assignment.slots.values() for c, ts in slot.executors if c == "count" for t in ts)


def test_a_wrapped_bolt_still_reports_its_own_counters(tmp_path):
    from streamgale.runtime.metrics import task_counters

    class Counting(Count):
        def counters(self):
            return {"words_seen": len(self.state)}

    cluster, _ = run_until_acked(word_count(Counting), local_config())
    counters = task_counters(cluster.executors)
    tasks = cluster.topology.task_ids()["count"]
    assert sum(counters[str(t)]["words_seen"] for t in tasks) == len(TRUTH)
    assert all("checkpoint_failed_unready" in counters[str(t)] for t in tasks)


def test_checkpoint_timeout_must_be_below_the_message_timeout():
    config = Config().merged({"topology.state.checkpoint_timeout": 30, "topology.message_timeout": 30}, "test")
    with pytest.raises(TopologyError) as e:
        LocalCluster(word_count(), config)
    assert str(e.value) == (
        "topology.state.checkpoint_timeout (30 s) must be below topology.message_timeout (30 s): a lost COMMIT "
        "must be retried before the inputs it holds time out; lower it or raise the message timeout")


def test_counters_before_prepare_or_raising_never_break_the_metrics():
    # The heartbeat thread reads counters from the first beat, possibly before prepare ran;
    # a counters() that raised there once stopped a worker's heartbeats (it was killed as hung).
    from streamgale.runtime.metrics import task_counters

    class Broken(Count):
        def counters(self):
            raise RuntimeError("boom")

    cluster = LocalCluster(word_count(Broken), local_config())
    counters = task_counters(cluster.executors)  # before prepare
    tasks = cluster.topology.task_ids()["count"]
    assert all(counters[str(t)]["counters_error"] == "RuntimeError: boom" for t in tasks)
    split = cluster.topology.task_ids()["split"]
    assert all("counters_error" not in counters[str(t)] for t in split)


def test_the_checkpoint_spout_sends_nothing_new_until_it_could_record_a_phase():
    # An unreachable backend while a PREPARE is acked: COMMIT is sent only once COMMITTING is
    # recorded (else a restart could roll back what some tasks committed), and txids never repeat.
    from streamgale.state.checkpoint import COMMIT, PREPARE, CheckpointSpout
    from streamgale.state.store import MemorySpace, MemoryStore

    class Flaky(MemoryStore):
        down = False

        def prepare(self, txid, changes, held):
            if Flaky.down:
                raise StateError("backend down")
            super().prepare(txid, changes, held)

    sent: list[tuple[int, str]] = []
    now = [0.0]
    spout = CheckpointSpout()
    spout.clock = lambda: now[0]
    spout.interval = 1.0
    spout.store = Flaky(MemorySpace(), "t/__checkpoint")
    spout.version, spout.txid, spout.phase = 0, 0, "COMMITTED"
    spout.todo, spout.in_flight, spout.after, spout.save_failing, spout.last, spout.attempt = [], None, None, False, 0.0, 0
    spout.emit = lambda values, stream, msg_id: sent.append((values[0], values[1]))  # type: ignore[method-assign]
    now[0] = 1.0
    spout.next_tuple()
    assert sent == [(1, PREPARE)]
    Flaky.down = True
    spout.ack((1, PREPARE, 1))
    for _ in range(3):
        spout.next_tuple()
    assert sent == [(1, PREPARE)]  # COMMIT waits for COMMITTING to be recorded
    Flaky.down = False
    spout.next_tuple()
    assert sent == [(1, PREPARE), (1, COMMIT)]
    assert spout.phase == "COMMITTING"
    spout.fail((1, COMMIT, 2))
    spout.next_tuple()
    spout.ack((1, COMMIT, 3))
    now[0] = 3.0
    spout.next_tuple()
    assert sent[-1] == (2, PREPARE)
    spout.fail((2, PREPARE, 4))
    spout.next_tuple()
    spout.ack((2, "ROLLBACK", 5))
    spout.next_tuple()
    spout.ack((2, "INITSTATE", 6))
    now[0] = 5.0
    spout.next_tuple()
    assert sent[-1] == (3, PREPARE)  # after a rollback of 2, the next checkpoint is 3, not 2 again


class _Marks:
    """A collector that records what a checkpointed bolt acks, fails and passes on."""

    acks = None

    def __init__(self):
        self.acked: list[tuple] = []
        self.failed: list[tuple] = []
        self.passed: list[tuple] = []

    def ack(self, tup):
        self.acked.append((tup.source_task, *tup.values))

    def fail(self, tup):
        self.failed.append((tup.source_task, *tup.values))

    def bolt_emit(self, values, stream, anchors):
        self.passed.append(tuple(values))

    bolt_emit_many = bolt_emit_direct = None


def _forwarder(inputs: tuple[int, ...]):
    """A stateless bolt reading two tasks of ``split``: it aligns their barriers and passes them on."""
    from streamgale.components import TopologyContext
    from streamgale.state.checkpoint import CheckpointedBolt

    bolt = CheckpointedBolt(Split(), ["split"], input_tasks=len(inputs))
    col = bolt._collector = _Marks()
    bolt.prepare(TopologyContext("t", "count", 9, 0, 1, Config(), {"split": inputs, "count": (9,)}, {}))
    return bolt, col


def _mark(source_task: int, txid: int, action: str, attempt: int):
    from streamgale.tuples import Tuple
    return Tuple([txid, action, attempt], CHECKPOINT, "split", source_task, {"txid": 0, "action": 1, "attempt": 2})


def test_a_late_copy_of_an_action_given_up_never_aligns_with_its_retry():
    # CI: a PREPARE failed at a restarted task while its copy was still on the way through the
    # restarted worker, and the ROLLBACK after it was retried the same way. Aligned by (txid,
    # action) alone, every retry closed a barrier with the late copy of the attempt before it,
    # and was left one copy short itself: each retry timed out, for a minute, and the tuples
    # failed meanwhile ran out of retries. Aligned by attempt, the retry completes at once.
    bolt, col = _forwarder((3, 4))
    bolt.process(_mark(4, 4, "PREPARE", 8))
    bolt.process(_mark(4, 4, "ROLLBACK", 9))  # the PREPARE failed elsewhere: its barrier is given up
    bolt.process(_mark(3, 4, "PREPARE", 8))  # late on channel 3: failed, the ROLLBACK stays aligned
    assert col.failed == [(4, 4, "PREPARE", 8), (3, 4, "PREPARE", 8)] and col.passed == []
    bolt.process(_mark(3, 4, "ROLLBACK", 9))
    assert col.passed == [(4, "ROLLBACK", 9)]
    assert col.acked == [(4, 4, "ROLLBACK", 9), (3, 4, "ROLLBACK", 9)]
    # A retry (a new attempt) while an attempt is half aligned: the old copies fail, the new one aligns.
    bolt.process(_mark(3, 4, "INITSTATE", 10))
    bolt.process(_mark(3, 4, "INITSTATE", 11))
    bolt.process(_mark(4, 4, "INITSTATE", 10))  # late: failed, not aligned with 11
    bolt.process(_mark(4, 4, "INITSTATE", 11))
    assert col.failed[2:] == [(3, 4, "INITSTATE", 10), (4, 4, "INITSTATE", 10)]
    assert col.passed[-1] == (4, "INITSTATE", 11) and len(col.passed) == 2


def test_a_restarted_checkpoint_spout_sends_attempts_above_every_earlier_one(tmp_path):
    # Bolts that outlived a checkpoint spout must take its new actions for new, not for late
    # copies: its attempts go on above what it recorded, also when the wall clock went back.
    from streamgale.components import TopologyContext
    from streamgale.state.checkpoint import UNRECORDED_ATTEMPTS, CheckpointSpout

    config = Config().merged({"topology.state.backend": "sqlite",
                              "topology.state.sqlite.path": str(tmp_path / "state.db")}, "test")
    attempts = []
    for wall in (100.0, 100.0, 50.0, 200.0):
        spout = CheckpointSpout()
        spout.wall = lambda: wall  # type: ignore[method-assign]
        spout.emit = lambda values, stream, msg_id: attempts.append(values[2])  # type: ignore[method-assign]
        spout.open(TopologyContext("t", CHECKPOINT, 1, 0, 1, config, {CHECKPOINT: (1,)}, {}))
        spout.next_tuple()  # INITSTATE
        spout.close()
    first = 100_000_000 + 1
    assert attempts == [first, first + UNRECORDED_ATTEMPTS, first + 2 * UNRECORDED_ATTEMPTS, 200_000_000 + 1]
