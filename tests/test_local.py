"""Local mode and streamgale.testing: exact results through the real executors."""

import time
from collections import Counter

import pytest

from streamgale import Bolt, Spout, Topology
from streamgale.config import Config
from streamgale.local import LocalCluster
from streamgale.testing import CapturingBolt, FixedTupleSpout, TopologyRunError, captured, complete_topology

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "the dog barks",
    "a fox is quick and a dog is lazy",
] * 50


class Split(Bolt):
    outputs = ["word"]

    def process(self, tup):
        for w in tup["sentence"].split():
            self.emit([w])


class Count(Bolt):
    outputs = ["word", "count"]

    def prepare(self, context):
        self.counts = Counter()

    def process(self, tup):
        self.counts[tup["word"]] += 1
        self.emit([tup["word"], self.counts[tup["word"]]])


def word_count(p=4):
    t = Topology("wc")
    t.spout("sentences", FixedTupleSpout([], ["sentence"]), parallelism=2)
    t.bolt("split", Split, parallelism=p).shuffle("sentences")
    t.bolt("count", Count, parallelism=p).fields("split", "word")
    return t


def test_exact_word_counts_with_parallelism_4():
    result = complete_topology(word_count(4), mock_sources={"sentences": [[s] for s in TEXT]})
    expected = Counter(w for s in TEXT for w in s.split())
    final = {}
    for word, count in result.emitted("count"):
        assert count == final.get(word, 0) + 1  # counts rise by one per word: one task per word
        final[word] = count
    assert final == expected
    assert len(result.emitted("split")) == sum(expected.values())
    assert len(result.emitted("sentences")) == len(TEXT)
    # Fields grouping: each word was counted by exactly one task.
    tasks_per_word = {}
    for task, (word, _) in result.emitted_by_task("count"):
        tasks_per_word.setdefault(word, set()).add(task)
    assert all(len(ts) == 1 for ts in tasks_per_word.values())
    assert len({t for ts in tasks_per_word.values() for t in ts}) > 1


class Router(Bolt):
    outputs = {"short": ["word"], "long": ["word", "length"]}

    def process(self, tup):
        w = tup["word"]
        if len(w) <= 3:
            self.emit([w], stream="short")
        else:
            self.emit([w, len(w)], stream="long")


class Upper(Bolt):
    outputs = ["word"]

    def process(self, tup):
        assert tup.stream == "long" and tup.source == "router" and tup.fields == ["word", "length"]
        self.emit([tup["word"].upper()])


def test_named_streams_reach_only_their_subscribers():
    t = Topology("streams")
    t.spout("words", FixedTupleSpout([], ["word"]))
    t.bolt("router", Router, parallelism=2).shuffle("words")
    t.bolt("upper", Upper, parallelism=2).shuffle("router", stream="long")
    words = ["a", "tree", "is", "green", "sky"]
    result = complete_topology(t, mock_sources={"words": [[w] for w in words]})
    assert sorted(result.emitted("router", "short")) == [["a"], ["is"], ["sky"]]
    assert sorted(result.emitted("router", "long")) == [["green", 5], ["tree", 4]]
    assert sorted(result.emitted("upper")) == [["GREEN"], ["TREE"]]
    assert result.emitted("router") == []


class Fanout(Bolt):
    outputs = ["n"]

    def process(self, tup):
        self.emit([tup["n"]])


class TaskEcho(Bolt):
    outputs = ["task", "n"]

    def prepare(self, context):
        self.task = context.task_id

    def process(self, tup):
        self.emit([self.task, tup["n"]])


def test_all_global_and_direct_groupings_end_to_end():
    class Director(Bolt):
        outputs = ["n"]

        def prepare(self, context):
            self.targets = context.tasks_of("direct")

        def process(self, tup):
            n = tup["n"]
            self.emit_direct(self.targets[n % len(self.targets)], [n])

    t = Topology("g")
    t.spout("nums", FixedTupleSpout([], ["n"]))
    t.bolt("fan", Fanout).shuffle("nums")
    t.bolt("everyone", TaskEcho, parallelism=3).all("fan")
    t.bolt("one", TaskEcho, parallelism=3).global_("fan")
    t.bolt("director", Director).shuffle("nums")
    t.bolt("direct", TaskEcho, parallelism=3).direct("director")
    tasks = t.task_ids()
    result = complete_topology(t, mock_sources={"nums": [[i] for i in range(30)]})
    everyone = Counter(task for task, _ in result.emitted("everyone"))
    assert everyone == {task: 30 for task in tasks["everyone"]}
    assert Counter(task for task, _ in result.emitted("one")) == {min(tasks["one"]): 30}
    direct = sorted(result.emitted("direct"), key=lambda v: v[1])
    assert direct == [[tasks["direct"][n % 3], n] for n in range(30)]


def test_tick_tuples_arrive_at_the_configured_interval():
    class Ticks(Bolt):
        outputs = ["t"]

        def process(self, tup):
            if tup.is_tick:
                assert tup.source == "__system" and tup.stream == "__tick"
                self.emit([time.monotonic()])

    class Endless(Spout):
        outputs = ["x"]

    t = Topology("ticks")
    t.spout("src", Endless)
    t.bolt("ticker", Ticks, parallelism=2, config={"topology.tick_interval": 0.1}).shuffle("src")
    t.bolt("sink", CapturingBolt("ticks")).global_("ticker")
    captured("ticks", clear=True)
    cluster = LocalCluster(t, Config())
    cluster.run(until=lambda: len(captured("ticks")) >= 10)
    ticks = captured("ticks", clear=True)
    assert {tup.source_task for tup in ticks} == set(t.task_ids()["ticker"])
    times = sorted(tup["t"] for tup in ticks)
    gaps = [b - a for a, b in zip(times[::2], times[2::2])]  # both tasks tick together
    assert all(0.05 < g < 0.3 for g in gaps), gaps


def test_emit_to_an_undeclared_stream_is_reported_with_component_and_task():
    class Bad(Bolt):
        outputs = ["x"]

        def process(self, tup):
            self.emit([1], stream="nope")

    t = Topology("bad")
    t.spout("src", FixedTupleSpout([], ["x"]))
    t.bolt("bad", Bad).shuffle("src")
    with pytest.raises(TopologyRunError) as e:
        complete_topology(t, mock_sources={"src": [[1]]})
    msg = str(e.value)
    assert "component 'bad' task 1: ValueError: component 'bad' emitted to stream 'nope'" in msg
    assert "which it does not declare (declared: 'default')" in msg


def test_emit_with_wrong_arity_is_an_error():
    class Bad(Bolt):
        outputs = ["a", "b"]

        def process(self, tup):
            self.emit([1])

    t = Topology("bad")
    t.spout("src", FixedTupleSpout([], ["x"]))
    t.bolt("bad", Bad).shuffle("src")
    with pytest.raises(TopologyRunError, match=r"emitted 1 values on stream 'default', which declares 2 fields \['a', 'b'\]"):
        complete_topology(t, mock_sources={"src": [[1]]})


def test_a_raising_bolt_does_not_stop_the_others():
    class Flaky(Bolt):
        outputs = ["n"]

        def process(self, tup):
            if tup["n"] % 10 == 0:
                raise RuntimeError(f"bad number {tup['n']}")
            self.emit([tup["n"]])

    t = Topology("flaky")
    t.spout("src", FixedTupleSpout([], ["n"]))
    t.bolt("flaky", Flaky, parallelism=2).shuffle("src")
    result = complete_topology(t, mock_sources={"src": [[i] for i in range(100)]}, raise_errors=False)
    assert len(result.emitted("flaky")) == 90
    assert len(result.errors) == 10
    assert {e.component for e in result.errors} == {"flaky"}
    assert all("RuntimeError: bad number" in e.details for e in result.errors)


def test_spout_lifecycle_and_acks_without_tracking():
    events = []

    class Life(Spout):
        outputs = ["n"]

        def open(self, context):
            self.n = 0
            events.append("open")

        def next_tuple(self):
            if self.n < 3:
                self.n += 1
                self.emit([self.n], msg_id=self.n)

        def ack(self, msg_id):
            events.append(("ack", msg_id))

        def close(self):
            events.append("close")

        def exhausted(self):
            return self.n >= 3

    class Sink(Bolt):
        def prepare(self, context):
            events.append("prepare")

        def process(self, tup):
            pass

        def cleanup(self):
            events.append("cleanup")

    t = Topology("life", config={"topology.acker_executors": 0})
    t.spout("src", Life)
    t.bolt("sink", Sink).shuffle("src")
    complete_topology(t)
    assert events == ["prepare", "open", ("ack", 1), ("ack", 2), ("ack", 3), "close", "cleanup"]


def test_unmocked_spout_without_exhausted_is_refused():
    class Endless(Spout):
        outputs = ["x"]

    t = Topology("e")
    t.spout("src", Endless)
    t.bolt("b", CapturingBolt("e")).shuffle("src")
    with pytest.raises(TypeError, match="spout Endless has no exhausted"):
        complete_topology(t)


def test_backpressure_bounds_queues_under_a_fast_spout():
    class Fast(Spout):
        outputs = ["n"]

        def open(self, context):
            self.n = 0

        def next_tuple(self):
            self.n += 1
            self.emit([self.n])

    class Slow(Bolt):
        def process(self, tup):
            sum(range(2000))

    t = Topology("bp")
    t.spout("fast", Fast)
    t.bolt("slow", Slow).shuffle("fast")
    cluster = LocalCluster(t, Config().merged({"topology.queue_size": 100}, "test"))
    depths = []

    def sample():
        depths.append(max(len(q) for q in cluster.loop.queues))
        return len(depths) > 500

    cluster.run(until=sample)
    assert max(depths) <= 100 + 64  # capacity plus at most one spout turn
