"""streamgale.testing's simulated time, acked and failed message ids, and direct bolt calls.

Every count here is exact: in simulated time nothing depends on how fast the machine is,
and no test waits for real time to pass.
"""

import copy
import math
from collections import Counter

import pytest

from streamgale import Bolt, Spout, Topology
from streamgale.testing import (
    FixedTupleSpout,
    SimulatedClock,
    TopologyRunError,
    _SimulatedSchedule,
    complete_topology,
    make_tuple,
    prepare_bolt,
    tick_tuple,
)
from streamgale.windowing import Duration, WindowedBolt


class Clocked(Bolt):
    """Emits ("data", word) per input and ("tick", the time) per tick, by the clock it holds."""

    outputs = ["kind", "value"]

    def __init__(self, clock):
        self.clock = clock

    def process(self, tup):
        if tup.is_tick:
            self.emit(["tick", self.clock()])
        else:
            self.emit(["data", tup["word"]])


WORDS = [["a"], ["b"], ["c"], ["a"], ["d"], ["e"]]


def clocked(clock, interval=10.0, parallelism=1):
    t = Topology("clocked")
    t.spout("words", FixedTupleSpout([], ["word"]))
    t.bolt("clocked", Clocked(clock), parallelism=parallelism,
           config={"topology.tick_interval": interval}).shuffle("words")
    return t


def test_advancing_n_intervals_gives_every_task_n_ticks_after_all_the_data():
    clock = SimulatedClock()
    t = clocked(clock, parallelism=3)
    result = complete_topology(t, mock_sources={"words": WORDS}, clock=clock, advance=30)
    emits = result.emitted("clocked")
    kinds = [kind for kind, _ in emits]
    assert kinds == ["data"] * 6 + ["tick"] * 9  # every data tuple before the first tick
    assert sorted(v for k, v in emits if k == "data") == ["a", "a", "b", "c", "d", "e"]
    by_task = {}
    for task, (kind, value) in result.emitted_by_task("clocked"):
        if kind == "tick":
            by_task.setdefault(task, []).append(value)
    assert by_task == {task: [10.0, 20.0, 30.0] for task in t.task_ids()["clocked"]}
    assert clock() == 30.0
    assert sorted(result.acked("words")) == [0, 1, 2, 3, 4, 5]  # in the order three tasks finished them
    assert result.failed("words") == []


def test_the_clock_stands_still_without_advance():
    clock = SimulatedClock(100.0)
    # A microsecond interval would tick many times in a real-time run of a few milliseconds.
    result = complete_topology(clocked(clock, interval=1e-6), mock_sources={"words": WORDS}, clock=clock)
    assert [k for k, _ in result.emitted("clocked")] == ["data"] * 6
    assert clock() == 100.0
    result = complete_topology(clocked(clock, interval=1e-6), mock_sources={"words": WORDS}, advance=0)
    assert [k for k, _ in result.emitted("clocked")] == ["data"] * 6


@pytest.mark.parametrize(("interval", "advance", "ticks"), [(0.1, 0.3, 3), (0.1, 1.0, 10), (0.7, 2.1, 3),
                                                           (10, 29.999, 2), (10, 30, 3), (10, 39, 3)])
def test_ticks_are_counted_exactly_whatever_the_rounding(interval, advance, ticks):
    clock = SimulatedClock()
    result = complete_topology(clocked(clock, interval), mock_sources={"words": []}, clock=clock,
                               advance=advance)
    times = [v for k, v in result.emitted("clocked") if k == "tick"]
    assert len(times) == ticks
    assert times == pytest.approx([interval * (i + 1) for i in range(ticks)])
    assert clock() == pytest.approx(advance)


def test_each_bolt_ticks_at_its_own_interval_and_instants_come_in_time_order():
    clock = SimulatedClock()

    class Both(Bolt):
        """Every tick of either ticking bolt, in the order they come."""

        outputs = ["source", "time"]

        def process(self, tup):
            if not tup.is_tick and tup["kind"] == "tick":  # its own ticks too: the topology's interval
                self.emit([tup.source, tup["value"]])

    t = Topology("intervals", config={"topology.tick_interval": 10})
    t.spout("words", FixedTupleSpout([], ["word"]))
    t.bolt("often", Clocked(clock)).shuffle("words")  # the topology's interval
    t.bolt("rarely", Clocked(clock), config={"topology.tick_interval": 25}).shuffle("words")
    t.bolt("both", Both).global_("often").global_("rarely")
    result = complete_topology(t, mock_sources={"words": WORDS}, clock=clock, advance=50)
    assert result.emitted("both") == [["often", 10], ["often", 20], ["rarely", 25], ["often", 30],
                                      ["often", 40], ["often", 50], ["rarely", 50]]


class Passive(Bolt):
    def process(self, tup):
        pass


def test_acked_and_failed_message_ids_are_exact():
    class Judge(Bolt):
        """Fails multiples of 3, raises on 4, passes the rest on."""

        outputs = ["n"]

        def process(self, tup):
            n = tup["n"]
            if n == 4:
                raise ValueError("four")
            if n % 3 == 0:
                self.fail(tup)
            else:
                self.emit([n])

    t = Topology("judged")
    t.spout("numbers", FixedTupleSpout([], ["n"]))
    t.bolt("judge", Judge).shuffle("numbers")
    t.bolt("after", Passive).shuffle("judge")
    t.bolt("beside", Passive).shuffle("numbers")  # a second branch of each tree
    result = complete_topology(t, mock_sources={"numbers": [[n] for n in range(10)]}, raise_errors=False)
    assert result.acked("numbers") == [1, 2, 5, 7, 8]
    assert result.failed("numbers") == [0, 3, 4, 6, 9]
    assert [e.component for e in result.errors] == ["judge"]
    with pytest.raises(TopologyRunError, match="ValueError: four"):
        complete_topology(t, mock_sources={"numbers": [[4]]})


def test_message_timeouts_follow_the_simulated_clock():
    class Holder(Bolt):
        """Acks odd numbers and holds the even ones for ever."""

        auto_ack = False

        def process(self, tup):
            if tup["n"] % 2:
                self.ack(tup)

    t = Topology("held", config={"topology.message_timeout": 5})
    t.spout("numbers", FixedTupleSpout([], ["n"]))
    t.bolt("holder", Holder).shuffle("numbers")
    mock = {"numbers": [[n] for n in range(6)]}
    for advance in (None, 0, 4.999):
        result = complete_topology(t, mock_sources=mock, advance=advance)
        assert result.acked("numbers") == [1, 3, 5]
        assert result.failed("numbers") == []  # still pending: neither acked nor failed
    for advance in (5, 60):
        result = complete_topology(t, mock_sources=mock, advance=advance)
        assert result.acked("numbers") == [1, 3, 5]
        assert result.failed("numbers") == [0, 2, 4]


class Replaying(Spout):
    """A real spout (no mock): emits 0..count-1 with themselves as message ids and replays each
    failed one; exhausted once every message is acked."""

    outputs = ["n"]

    def __init__(self, count=5):
        self.count = count

    def open(self, context):
        self.todo = list(range(self.count))
        self.done = set()

    def next_tuple(self):
        if self.todo:
            n = self.todo.pop(0)
            self.emit([n], msg_id=n)

    def ack(self, msg_id):
        self.done.add(msg_id)

    def fail(self, msg_id):
        self.todo.append(msg_id)

    def exhausted(self):
        return len(self.done) == self.count


class FailsOddOnce(Bolt):
    outputs = ["word"]

    def prepare(self, context):
        self.seen = set()

    def process(self, tup):
        n = tup["n"]
        if n % 2 and n not in self.seen:
            self.seen.add(n)
            self.fail(tup)
        else:
            self.emit([str(n)])


def test_a_real_spout_s_acks_and_fails_and_its_replays_come_before_the_clock_moves():
    clock = SimulatedClock()
    t = Topology("replays")
    t.spout("numbers", Replaying(5))
    t.bolt("judge", FailsOddOnce).shuffle("numbers")
    t.bolt("clocked", Clocked(clock), config={"topology.tick_interval": 1}).shuffle("judge")
    result = complete_topology(t, clock=clock, advance=2)
    assert result.failed("numbers") == [1, 3]
    assert result.acked("numbers") == [0, 2, 4, 1, 3]
    assert result.emitted("clocked") == [["data", w] for w in "02413"] + [["tick", 1.0], ["tick", 2.0]]


def test_acks_without_ackers_are_recorded_as_the_spout_gets_them():
    t = Topology("untracked", config={"topology.acker_executors": 0})
    t.spout("numbers", Replaying(3))
    t.bolt("judge", FailsOddOnce).shuffle("numbers")
    result = complete_topology(t)
    assert result.acked("numbers") == [0, 1, 2]  # no tracking: acked as emitted, never failed
    assert result.failed("numbers") == []


def test_acked_of_a_name_that_is_no_spout_is_an_error():
    result = complete_topology(clocked(SimulatedClock()), mock_sources={"words": WORDS})
    with pytest.raises(ValueError, match=r"'clocked' is not a spout of the topology \(its spouts: words\)"):
        result.acked("clocked")
    with pytest.raises(ValueError, match="'word' is not a spout"):
        result.failed("word")


@pytest.mark.parametrize("advance", [-1, math.nan])
def test_advance_must_be_seconds_not_below_zero(advance):
    with pytest.raises(ValueError, match=r"advance=.* must be a number of seconds >= 0"):
        complete_topology(clocked(SimulatedClock()), mock_sources={"words": WORDS}, advance=advance)


class Tumbling(WindowedBolt):
    """The words of each 10 s processing-time window, by the clock it holds."""

    window_length = Duration(10)
    outputs = ["words", "end"]

    def __init__(self, clock):
        self.clock = clock

    def now(self):
        return self.clock()

    def process_window(self, window):
        self.emit([[t["word"] for t in window.tuples], window.end])


def windows(clock):
    t = Topology("windows")
    t.spout("words", FixedTupleSpout([], ["word"]))
    t.bolt("window", Tumbling(clock), parallelism=2).shuffle("words")  # each task's copy reads clock
    return t


def test_a_windowed_bolt_reading_the_simulated_clock_is_tested_exactly():
    clock = SimulatedClock(1000.0)
    held = complete_topology(windows(clock), mock_sources={"words": WORDS}, clock=clock)
    assert held.emitted("window") == []
    assert held.acked("words") == [] and held.failed("words") == []  # in a window not yet evaluated
    clock = SimulatedClock(1000.0)
    result = complete_topology(windows(clock), mock_sources={"words": WORDS}, clock=clock, advance=25)
    assert sorted(w for words, _ in result.emitted("window") for w in words) == ["a", "a", "b", "c", "d", "e"]
    assert {end for _, end in result.emitted("window")} == {1010}
    assert sorted(result.acked("words")) == [0, 1, 2, 3, 4, 5]


class Totals(Bolt):
    outputs = {"default": ["word", "total"], "summary": ["words"]}

    def prepare(self, context):
        self.counts = Counter()
        self.interval = context.config["topology.tick_interval"]

    def process(self, tup):
        if tup.is_tick:
            for word, total in sorted(self.counts.items()):
                self.emit([word, total])
            self.emit([len(self.counts)], stream="summary")
        elif tup["word"] == "oops":
            self.emit(["oops"], stream="nope")
        else:
            self.counts[tup["word"]] += 1
            if tup["word"] == "bad":
                self.fail(tup)


def test_prepare_bolt_records_what_a_directly_called_bolt_emits_acks_and_fails():
    bolt = Totals()
    output = prepare_bolt(bolt, {"topology.tick_interval": 2})
    assert bolt.interval == 2
    words = [make_tuple([w], ["word"]) for w in ["the", "bad", "the"]]
    for tup in words:
        bolt.process(tup)
    assert output.emits == []
    bolt.process(tick_tuple())
    bolt.process(tick_tuple())
    assert output.emitted() == [["bad", 1], ["the", 2]] * 2
    assert output.emitted("summary") == [[2], [2]]
    assert output.emits[:3] == [("default", ["bad", 1]), ("default", ["the", 2]), ("summary", [2])]
    assert output.failed == [words[1]] and output.acked == []
    with pytest.raises(ValueError, match=r"emitted to stream 'nope', which it does not declare "
                                         r"\(declared: 'default', 'summary'\)"):
        bolt.process(make_tuple(["oops"], ["word"]))


def test_a_directly_called_windowed_bolt_follows_the_clock_the_test_advances():
    clock = SimulatedClock(1000.0)
    bolt = Tumbling(clock)
    output = prepare_bolt(bolt)  # its component_config gives it the tick interval it needs
    bolt.process(make_tuple(["x"], ["word"]))
    clock.advance(9.5)
    bolt.process(tick_tuple())
    assert output.emits == []
    clock.advance(0.5)
    bolt.process(tick_tuple())
    assert output.emitted() == [[["x"], 1010]]
    assert [t.values for t in output.acked] == [["x"]]


def test_tuples_for_direct_calls():
    tup = make_tuple(["a", 2], ["word", "count"], stream="counts", source="count", source_task=7)
    assert (tup["word"], tup["count"], tup.stream, tup.source, tup.source_task) == ("a", 2, "counts", "count", 7)
    assert not tup.is_tick and not tup.tracked
    tick = tick_tuple(2.5)
    assert tick.is_tick and tick.source == "__system" and tick["interval"] == tick[0] == 2.5
    with pytest.raises(ValueError, match=r"make_tuple: 1 values for 2 fields \['word', 'count'\]"):
        make_tuple(["a"], ["word", "count"])


def test_simulated_clock_moves_only_forward_and_is_shared_by_copies():
    clock = SimulatedClock(5)
    clock.advance(2.5)
    clock.advance(0)
    assert clock() == 7.5 and repr(clock) == "SimulatedClock(7.5)"
    for bad in (-0.1, math.nan):
        with pytest.raises(ValueError, match="only moves forward"):
            clock.advance(bad)
    assert clock() == 7.5
    bolt = Clocked(clock)
    assert copy.deepcopy(bolt).clock is clock


def test_the_schedule_stops_at_each_due_tick_then_at_the_end():
    def instants(intervals, start, end):
        schedule, now, out = _SimulatedSchedule(intervals, start, end), start, []
        while (now := schedule.next_instant(now)) is not None:
            out.append(now)
        return out

    assert instants([10, 25], 0, 50) == [10, 20, 25, 30, 40, 50]  # 50: both timers at once
    assert instants([10, 25], 0, 55) == [10, 20, 25, 30, 40, 50, 55]
    assert instants([10], 100, 100) == []
    assert instants([], 0, 7) == [7]
    assert len(instants([0.1], 0, 0.3)) == 3  # 0.1 + 0.1 + 0.1 > 0.3, but the third tick counts
