"""Guaranteed message processing in local mode, and the pure acking logic.

The local runs here read a :class:`ManualClock`: time moves only when a test
moves it, so timeouts and ticks are exact and no test depends on how fast the
machine is.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from streamgale import Bolt, LocalCluster, ReliableSpout, Spout, Topology
from streamgale.config import Config
from streamgale.runtime.acker import Acker
from streamgale.runtime.acking import ACK_RESULT_STREAM, AckBuffer, AckerTable, IdGenerator, PendingRoots, new_id
from streamgale.runtime.executor import SpoutExecutor, TaskRunner
from streamgale.runtime.loop import ExecutorLoop
from streamgale.tuples import Tuple


def config(**kw) -> Config:
    return Config().merged({k.replace("__", "."): v for k, v in kw.items()}, "test")


class ManualClock:
    """Monotonic seconds that move only when :meth:`advance` is called."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def on_clock(cluster: LocalCluster, clock: ManualClock) -> LocalCluster:
    """Make every part of ``cluster`` that reads time read ``clock``.

    LocalCluster builds its executors without a clock, so the spout executors
    are rebuilt around the same tasks with their ``clock=`` parameter, the
    acker tasks get the clock, the collectors (which stamp spout tuples) are pointed at it, and
    the loop (tick timers) is rebuilt with it.
    """
    executors = []
    for e in cluster.executors:
        if e.kind == "acker":
            for r in e.runners:
                r.instance.clock = clock
        elif isinstance(e, SpoutExecutor):
            e = SpoutExecutor(e.component, e.runners, e.on_error, e.message_timeout, e.max_pending, clock=clock)
        for r in e.runners:
            if isinstance(r, TaskRunner):
                r.collector.clock = clock
        executors.append(e)
    cluster.executors = executors
    cluster.loop = ExecutorLoop(executors, cluster.config["topology.queue_size"], clock=clock)
    return cluster


def tracked(acker) -> int:
    """Tuple trees the acker executor's tasks track now."""
    return sum(r.instance.tracked() for r in acker.runners)


def settle(cluster: LocalCluster, until: Callable[[], bool] = lambda: False, max_turns: int = 100_000) -> None:
    """Run loop turns at the clock's current time until ``until()`` holds or nothing is left to do."""
    loop = cluster.loop
    if not loop.started:
        loop.start()
    for _ in range(max_turns):
        if until():
            return
        if loop.step() == 0 and loop.idle():
            return
    raise AssertionError(f"the topology was still busy after {max_turns} loop turns")


class Numbers(ReliableSpout):
    """Emits 0..total-1 once each (replaying failures); records what happened."""

    outputs = ["n"]
    total = 200
    log: dict = {}

    def open(self, context):
        self.next = context.task_index
        self.step = context.task_count
        self.acked_ids: set = set()
        self.failed_ids: list = []
        self.max_in_flight = 0
        type(self).log[context.task_id] = self

    def next_message(self):
        if self.next >= self.total:
            return None
        n, self.next = self.next, self.next + self.step
        return n, [n]

    def next_tuple(self):
        super().next_tuple()
        self.max_in_flight = max(self.max_in_flight, self.pending_count)

    def on_acked(self, msg_id, values):
        self.acked_ids.add(msg_id)

    def fail(self, msg_id):
        self.failed_ids.append(msg_id)
        super().fail(msg_id)


def fresh(spout: type, **attrs) -> type:
    return type(spout.__name__, (spout,), {"log": {}, **attrs})


def all_acked(spout: type, total: int):
    return lambda: sum(len(s.acked_ids) for s in spout.log.values()) == total


def run(topology, until, clock=None, tick=None, max_ticks=1000, **conf) -> LocalCluster:
    """Run ``topology`` on ``clock`` (a new ManualClock by default) until ``until()``.

    Whenever the topology has nothing left to do at the current time, the clock
    moves on by ``tick`` seconds (at most ``max_ticks`` times); without ``tick``
    the clock stands still, so no timeout can fire.
    """
    clock = ManualClock() if clock is None else clock
    cluster = on_clock(LocalCluster(topology, config(**conf)), clock)
    try:
        for _ in range(max_ticks + 1):
            settle(cluster, until)
            if until() or tick is None:
                break
            clock.advance(tick)
        assert until(), f"condition not reached by t={clock.now} s (errors: {cluster.errors})"
    finally:
        cluster.loop.stop()
    return cluster


class Fanout(Bolt):
    outputs = ["n", "k"]

    def process(self, tup):
        for k in range(3):
            self.emit([tup["n"], k])


class RandomFail(Bolt):
    """Fails 10% of its inputs explicitly; counts the fails it caused, per message."""

    auto_ack = False
    fails: Counter = Counter()

    def prepare(self, context):
        self.rng = random.Random(context.task_id)

    def process(self, tup):
        if self.rng.random() < 0.1:
            type(self).fails[tup["n"]] += 1
            self.fail(tup)
        else:
            self.ack(tup)


def test_every_message_is_acked_despite_random_failures_and_each_fail_reaches_the_spout():
    spout = fresh(Numbers)
    failer = type("RandomFail", (RandomFail,), {"fails": Counter()})
    t = Topology("acks")
    t.spout("numbers", spout, parallelism=2)
    t.bolt("fanout", Fanout, parallelism=2).shuffle("numbers")
    t.bolt("fail", failer, parallelism=3).fields("fanout", "k")
    run(t, all_acked(spout, 200))
    acked = set().union(*(s.acked_ids for s in spout.log.values()))
    assert acked == set(range(200))
    failed = Counter(n for s in spout.log.values() for n in s.failed_ids)
    assert failer.fails  # the test really failed some
    # One spout fail per failed tree attempt; a tree with two failing leaves fails once.
    assert set(failed) == set(failer.fails)
    assert all(1 <= failed[n] <= failer.fails[n] for n in failed)


class Holder(Bolt):
    """Never acks: every tree times out."""

    auto_ack = False

    def process(self, tup):
        pass


class Once(Spout):
    """Emits one tracked tuple; records (ack or fail, msg_id, ``clock()`` when it came)."""

    outputs = ["n"]
    log: dict = {}
    clock: Callable[[], float] = ManualClock()  # set by each test

    def open(self, context):
        self.sent = False
        self.events = []
        type(self).log[context.task_id] = self

    def next_tuple(self):
        if not self.sent:
            self.sent = True
            self.emit([1], msg_id="m")

    def ack(self, msg_id):
        self.events.append(("ack", msg_id, self.clock()))

    def fail(self, msg_id):
        self.events.append(("fail", msg_id, self.clock()))


def once_events(spout):
    return lambda: any(s.events for s in spout.log.values())


def held_once(name: str, timeout: float, clock: ManualClock) -> tuple[type, LocalCluster]:
    """One tracked tuple into a bolt that never acks it, on ``clock``: (the spout class, the cluster)."""
    spout = fresh(Once, clock=clock)
    t = Topology(name)
    t.spout("once", spout)
    t.bolt("hold", Holder).shuffle("once")
    return spout, on_clock(LocalCluster(t, config(topology__message_timeout=timeout)), clock)


def test_a_tree_not_completed_in_time_fails_at_the_timeout_and_the_acker_forgets_it():
    clock = ManualClock()
    spout, cluster = held_once("timeout", 0.5, clock)
    [acker] = [e for e in cluster.executors if e.kind == "acker"]
    try:
        settle(cluster)
        [s] = spout.log.values()
        assert s.events == [] and tracked(acker) == 1
        clock.advance(0.499)
        settle(cluster)
        assert s.events == []  # not a moment before the timeout
        clock.advance(0.001)
        settle(cluster)
        assert s.events == [("fail", "m", 0.5)]
        # The acker forgets the root between timeout and 1.5 x timeout (3 generations).
        assert tracked(acker) == 1
        clock.advance(0.25)
        settle(cluster)
        assert tracked(acker) == 0
        assert s.events == [("fail", "m", 0.5)]  # failed once, never acked
    finally:
        cluster.loop.stop()


class Pass(Bolt):
    outputs = ["n"]

    def process(self, tup):
        self.emit([tup["n"]])


class FailAll(Bolt):
    auto_ack = False

    def process(self, tup):
        self.fail(tup)


def test_an_explicit_fail_deep_in_the_tree_reaches_the_spout():
    spout = fresh(Once)
    t = Topology("deep")
    t.spout("once", spout)
    t.bolt("a", Pass).shuffle("once")
    t.bolt("b", Pass).shuffle("a")
    t.bolt("c", Pass).shuffle("b")
    t.bolt("d", FailAll).shuffle("c")
    clock = ManualClock()
    spout.clock = clock
    run(t, once_events(spout), clock=clock)
    [s] = spout.log.values()
    assert s.events == [("fail", "m", 0.0)]  # at once: the clock never moved, so no timeout fired


class Explode(Bolt):
    outputs = ["i"]

    def process(self, tup):
        for i in range(10_000):
            self.emit([i])


class Sink(Bolt):
    def process(self, tup):
        pass


def test_acker_memory_does_not_grow_with_the_tree():
    spout = fresh(Once)
    t = Topology("wide")
    t.spout("once", spout)
    t.bolt("explode", Explode).shuffle("once")
    t.bolt("sink", Sink, parallelism=2).shuffle("explode")
    cluster = on_clock(LocalCluster(t, config()), ManualClock())
    [acker] = [e for e in cluster.executors if e.kind == "acker"]
    sizes = []
    [runner] = acker.runners
    original = runner.batch

    def batch(tuples):  # the acker takes its input a batch at a time
        original(tuples)
        sizes.append(tracked(acker))
    runner.batch = batch
    try:
        settle(cluster, once_events(spout))
    finally:
        cluster.loop.stop()
    [s] = spout.log.values()
    assert [e[:2] for e in s.events] == [("ack", "m")]
    assert max(sizes) == 1  # one entry for the whole 10,001-tuple tree
    assert tracked(acker) == 0


class AckSetInOpen(Spout):
    """Keeps Spout's ack and fail, but sets an ack of its own on the instance in open."""

    outputs = ["n"]
    log: dict = {}

    def open(self, context):
        self.events = []
        self.ack = lambda msg_id: self.events.append(msg_id)
        self.left = [1, 2, 3]
        type(self).log[context.task_id] = self

    def next_tuple(self):
        if self.left:
            n = self.left.pop()
            self.emit([n], msg_id=n)


def test_the_ack_a_spout_sets_on_itself_is_called_for_every_tree():
    spout = fresh(AckSetInOpen)
    t = Topology("own-ack")
    t.spout("numbers", spout)
    t.bolt("pass", Pass).shuffle("numbers")
    run(t, lambda: any(len(s.events) == 3 for s in spout.log.values()))
    [s] = spout.log.values()
    assert sorted(s.events) == [1, 2, 3]


def test_with_acking_off_spout_tuples_are_acked_at_once():
    spout = fresh(Once)
    t = Topology("off")
    t.spout("once", spout)
    t.bolt("hold", Holder).shuffle("once")
    cluster = run(t, once_events(spout), topology__acker_executors=0)
    assert not [e for e in cluster.executors if e.kind == "acker"]
    [s] = spout.log.values()
    assert [e[:2] for e in s.events] == [("ack", "m")]


class SlowAck(Bolt):
    """Acks each input only after the next few arrive (holds up to 3)."""

    auto_ack = False

    def prepare(self, context):
        self.held = []

    def process(self, tup):
        self.held.append(tup)
        if len(self.held) > 3 or tup.is_tick:
            for h in self.held:
                self.ack(h)
            self.held = []


def test_max_spout_pending_bounds_the_tuples_in_flight():
    spout = fresh(Numbers, total=502)  # SlowAck acks in fours: the last two wait for a tick
    t = Topology("pending")
    t.spout("numbers", spout)
    t.bolt("slow", SlowAck, config={"topology.tick_interval": 0.05}).shuffle("numbers")
    clock = ManualClock()
    run(t, all_acked(spout, 502), clock=clock, tick=0.05, topology__max_spout_pending=7)
    [s] = spout.log.values()
    assert s.max_in_flight == 7
    assert clock.now == 0.05  # one tick released the last two
    assert s.failed_ids == []


class Join(Bolt):
    """Pairs tuples n from 'left' and 'right'; emits anchored to both, then acks both."""

    outputs = ["n"]
    auto_ack = False

    def prepare(self, context):
        self.waiting = {}

    def process(self, tup):
        other = self.waiting.pop(tup["n"], None)
        if other is None:
            self.waiting[tup["n"]] = tup
            return
        self.emit([tup["n"]], anchors=[tup, other])
        self.ack(tup)
        self.ack(other)


def test_multi_anchored_tuples_hold_both_trees_until_acked():
    spout = fresh(Numbers, total=100)
    failer = type("RandomFail", (RandomFail,), {"fails": Counter()})
    t = Topology("join")
    t.spout("numbers", spout)
    t.bolt("left", Pass).shuffle("numbers")
    t.bolt("right", Pass).shuffle("numbers")
    t.bolt("join", Join, parallelism=2).fields("left", "n").fields("right", "n")
    t.bolt("end", failer).shuffle("join")
    run(t, all_acked(spout, 100))
    [s] = spout.log.values()
    assert set(s.failed_ids) == set(failer.fails)  # a failure after the join fails the spout tuple


class Boom(Bolt):
    def process(self, tup):
        if tup["n"] % 2:
            raise ValueError(f"odd {tup['n']}")


def test_a_bolt_that_raises_fails_its_input_and_the_error_is_reported():
    spout = fresh(Numbers, total=10, max_retries=0)
    exhausted = []
    spout.on_exhausted = lambda self, msg_id, values: exhausted.append(msg_id)
    t = Topology("boom")
    t.spout("numbers", spout)
    t.bolt("boom", Boom).shuffle("numbers")
    cluster = run(t, lambda: len(exhausted) == 5 and all_acked(spout, 5)())
    assert sorted(exhausted) == [1, 3, 5, 7, 9]
    assert len(cluster.errors) == 5
    first = cluster.errors[0]
    assert (first.component, first.task, str(first.error)) == ("boom", 1, "odd 1")
    assert "ValueError: odd 1" in first.details  # the traceback


# -- the pure logic --------------------------------------------------------------------------------


def test_acker_table_completes_a_tree_whatever_the_order_of_messages():
    rng = random.Random(7)
    for _ in range(200):
        root, edges = new_id(), [new_id() for _ in range(5)]
        # spout -> e0, e1; e0's bolt emits e2, e3; e1's bolt emits e4; leaves ack
        msgs = [("init", edges[0] ^ edges[1]), ("ack", edges[0] ^ edges[2] ^ edges[3]),
                ("ack", edges[1] ^ edges[4]), ("ack", edges[2]), ("ack", edges[3]), ("ack", edges[4])]
        rng.shuffle(msgs)
        table = AckerTable(30, now=0)
        acked: dict = {}
        for kind, val in msgs:
            assert not acked, "completed early"
            table.apply([[root], [val], [9]] if kind == "init" else [[], [], []],
                        [[root], [val]] if kind == "ack" else [[], []], [], acked, {})
        assert acked == {9: [root]} and len(table) == 0


def test_acker_table_fails_a_root_even_when_the_fail_comes_before_the_init():
    table = AckerTable(30, now=0)
    failed: dict = {}
    table.apply([[], [], []], [[], []], [5], {}, failed)
    assert failed == {}
    table.apply([[5], [123], [2]], [[], []], [], {}, failed)
    assert failed == {2: [5]} and len(table) == 0


def test_acker_table_forgets_roots_after_the_timeout():
    table = AckerTable(10, generations=3, now=0)
    table.apply([[1], [7], [2]], [[], []], [], {}, {})
    assert table.expire(9.9) == 0 and len(table) == 1
    assert table.expire(15.1) == 1 and len(table) == 0


def test_ack_buffer_batches_per_acker_as_parallel_lists():
    buf = AckBuffer((10, 11))
    buf.init(4, 5, 1)
    buf.ack(4, 3)
    buf.ack(4, 3)
    buf.ack(5, 1)
    buf.fail(6)
    out = dict(buf.drain())
    assert out == {10: [[[4], [5], [1]], [[4, 4], [3, 3]], [6]], 11: [[[], [], []], [[5], [1]], []]}
    assert not buf.dirty and dict(buf.drain()) == {}


def test_acker_table_rejects_lists_that_are_not_parallel():
    table = AckerTable(30, now=0)
    with pytest.raises(ValueError, match="parallel"):
        table.apply([[1, 2], [3], [4]], [[], []], [], {}, {})
    with pytest.raises(ValueError, match="parallel"):
        table.apply([[], [], []], [[1], []], [], {}, {})
    assert len(table) == 0


def test_pending_roots_expire_oldest_first():
    p = PendingRoots()
    p.add(1, "a", 0.0)
    p.add(2, "b", 1.0)
    p.add(3, "c", 2.0)
    assert p.pop(2) == ("b", 1.0)
    assert p.expired(10.5, 10) == [("a", 0.0)]
    assert len(p) == 1


def test_pending_roots_expire_exactly_once_whatever_was_popped_before():
    p = PendingRoots()
    for root in range(1, 6):
        p.add(root, f"m{root}", float(root))
    assert p.expired(5.0, 10) == []  # nothing due: the bound answers
    assert [p.pop(r) for r in (1, 2, 9)] == [("m1", 1.0), ("m2", 2.0), None]
    assert p.expired(13.0, 10) == [("m3", 3.0)]
    assert p.expired(13.5, 10) == []
    assert p.expired(15.0, 10) == [("m4", 4.0), ("m5", 5.0)] and len(p) == 0
    p.add(7, "m7", 20.0)  # emitted after the dict ran empty: its own time is the new bound
    assert p.expired(29.0, 10) == [] and p.expired(30.0, 10) == [("m7", 20.0)]


def test_ids_follow_xorshift64_from_their_seed():
    gen = IdGenerator(0x0123456789ABCDEF)
    x, mask = 0x0123456789ABCDEF, (1 << 64) - 1
    for _ in range(5000):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        assert gen.next() == (x & ((1 << 62) - 1) or 1) and gen.state() == x
    assert IdGenerator().state() != IdGenerator().state()  # unseeded: from the OS, each its own


def test_a_forked_child_draws_other_ids_than_its_parent():
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=lambda: writer.send([new_id() for _ in range(1000)]))
    child.start()
    try:
        theirs = reader.recv()
    finally:
        child.join(timeout=30)
    mine = [new_id() for _ in range(1000)]
    assert len(theirs) == 1000 and not set(theirs) & set(mine)


def test_new_ids_are_64_bit_and_non_zero():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(0 < i < 2**64 for i in ids)


class BatchDouble(Bolt):
    """Takes its input a batch at a time and emits each value twice, anchored explicitly."""

    outputs = ["n"]
    batches: list = []

    def process_batch(self, tuples):
        type(self).batches.append(len(tuples))
        for tup in tuples:
            self.emit([tup["n"] * 2], anchors=tup)


class FailOdd(Bolt):
    """Fails the first sight of each value 2 (mod 4), acks everything else."""

    auto_ack = False

    def prepare(self, context):
        self.seen = set()

    def process(self, tup):
        n = tup["n"]
        first = n not in self.seen
        self.seen.add(n)
        (self.fail if first and n % 4 == 2 else self.ack)(tup)


def test_process_batch_inputs_are_acked_and_explicit_anchors_keep_the_trees():
    spout = fresh(Numbers, total=300)
    BatchDouble.batches = []
    t = Topology("batches")
    t.spout("numbers", spout)
    t.bolt("double", BatchDouble).shuffle("numbers")
    t.bolt("check", FailOdd).shuffle("double")
    run(t, lambda: sum(len(s.acked_ids) for s in spout.log.values()) == 300)
    assert sum(BatchDouble.batches) >= 300 and max(BatchDouble.batches) > 1  # batches, not one by one
    failed = sorted(m for s in spout.log.values() for m in s.failed_ids)
    assert failed == list(range(1, 300, 2))  # 2n % 4 == 2 exactly for odd n: each of their trees failed once


def test_a_large_release_of_acks_goes_out_in_messages_a_worker_decodes():
    # A commit of checkpointed state releases a whole interval's acks at once (docs/state.md).
    from streamgale.runtime.acking import ACK_CHUNK
    from streamgale.wire.frames import MIN_ARRAY_LEN

    buf = AckBuffer((7,))
    roots = [new_id() for _ in range(2 * ACK_CHUNK + 5)]
    for r in roots:
        buf.ack(r, r ^ 1)
    buf.fail(roots[0])
    messages = buf.drain()
    assert [acker for acker, _ in messages] == [7, 7, 7]
    assert ACK_CHUNK <= MIN_ARRAY_LEN
    assert all(len(v[1][0]) <= ACK_CHUNK and len(v[1][0]) == len(v[1][1]) for _, v in messages)
    assert [r for _, v in messages for r in v[1][0]] == roots  # every ack, in order, once
    assert [r for _, v in messages for r in v[2]] == [roots[0]]


def test_fail_pending_fails_every_tree_in_flight_at_once_and_a_late_completion_counts_as_a_duplicate():
    """A worker of the topology was lost (issue 20): the spouts fail what is pending now rather
    than at the message timeout; a tree that completes after all is counted, not acked twice."""
    clock = ManualClock()
    spout, cluster = held_once("fail-fast", 30, clock)
    [executor] = [e for e in cluster.executors if e.kind == "spout"]
    try:
        settle(cluster)
        [s] = spout.log.values()
        [runner] = executor.runners
        [root] = list(runner.collector.pending.entries)
        clock.advance(0.2)
        assert executor.fail_pending() == 1
        assert s.events == [("fail", "m", 0.2)]  # at once, not at 30 s
        assert len(runner.collector.pending) == 0 and executor.fail_pending() == 0
        assert (runner.collector.failed, runner.collector.failed_early) == (1, 1)
        runner.queue.append(Tuple([[root], []], ACK_RESULT_STREAM, "__acker", 3, {}))  # it completed after all
        settle(cluster)
        assert s.events == [("fail", "m", 0.2)] and runner.collector.late_acks == 1
    finally:
        cluster.loop.stop()
