"""Windowed bolts: the pure WindowManager with an injected clock, then end to end in local mode."""

import importlib.util
import re
import sys
import time
from collections import defaultdict

import msgpack
import pytest
from conftest import ROOT

from streamgale import Bolt, ReliableSpout, Spout, Topology, TopologyError
from streamgale.config import Config
from streamgale.local import LocalCluster
from streamgale.state import KeyValueState, committed_state
from streamgale.testing import FixedTupleSpout, TopologyRunError, complete_topology
from streamgale.windowing import (
    TICK_SLACK,
    WINDOW_KEY,
    Count,
    Duration,
    Evaluate,
    Expire,
    Late,
    StatefulWindowedBolt,
    WindowedBolt,
    WindowedState,
    WindowManager,
    WindowSpec,
)

WHERE = "windowed bolt 'w'"


def spec_of(**attrs):
    return WindowSpec.of(type("Declared", (WindowedBolt,), attrs), WHERE)


def manager(**attrs):
    return WindowManager(spec_of(**attrs))


def describe(actions):
    """Actions as plain data: ('eval', start, end, tuples, new, expired), ('expire', items), ('late', item)."""
    out = []
    for a in actions:
        if isinstance(a, Evaluate):
            w = a.window
            out.append(("eval", w.start, w.end, w.tuples, w.new, w.expired))
        elif isinstance(a, Expire):
            out.append(("expire", a.items))
        else:
            assert isinstance(a, Late)
            out.append(("late", a.item))
    return out


def windows(actions):
    return [a[3] for a in describe(actions) if a[0] == "eval"]


# -- count windows -------------------------------------------------------------------------------


def test_count_tumbling_windows_hold_exactly_n_tuples_and_expire_them_after_evaluation():
    m = manager(window_length=Count(3))
    actions = [describe(m.add(v, [v], now=0.0)) for v in range(1, 8)]
    assert actions == [
        [], [], [("eval", None, None, [1, 2, 3], [1, 2, 3], []), ("expire", [1, 2, 3])],
        [], [], [("eval", None, None, [4, 5, 6], [4, 5, 6], [1, 2, 3]), ("expire", [4, 5, 6])],
        [],
    ]
    assert m.held == 1  # 7 waits for the next window
    assert m.tick(100.0) == []  # count windows ignore ticks


def test_count_sliding_windows_are_the_last_n_every_m_tuples():
    m = manager(window_length=Count(3), window_slide=Count(2))
    out = []
    for v in range(1, 8):
        out += describe(m.add(v, [v], now=0.0))
    assert out == [
        ("eval", None, None, [1, 2], [1, 2], []), ("expire", [1]),
        ("eval", None, None, [2, 3, 4], [3, 4], [1]), ("expire", [2, 3]),
        ("eval", None, None, [4, 5, 6], [5, 6], [2, 3]), ("expire", [4, 5]),
    ]
    assert m.held == 2  # 6 and 7


# -- processing-time windows ---------------------------------------------------------------------


def test_processing_time_tumbling_windows_are_aligned_half_open_intervals():
    m = manager(window_length=Duration(10))
    for now in (1.0, 2.0, 9.5):
        assert m.add(now, [now], now=now) == []
    assert m.tick(9.9) == []
    assert m.add(10.0, [10.0], now=10.0) == []  # a window is [start, end): 10 opens the next one
    assert describe(m.tick(10.2)) == [("eval", 0, 10, [1.0, 2.0, 9.5], [1.0, 2.0, 9.5], []),
                                      ("expire", [1.0, 2.0, 9.5])]
    m.add(12.0, [12.0], now=12.0)
    m.add(25.0, [25.0], now=25.0)
    assert describe(m.tick(31.0)) == [
        ("eval", 10, 20, [10.0, 12.0], [10.0, 12.0], [1.0, 2.0, 9.5]), ("expire", [10.0, 12.0]),
        ("eval", 20, 30, [25.0], [25.0], [10.0, 12.0]), ("expire", [25.0]),
    ]
    assert m.held == 0


def test_processing_time_sliding_windows_skip_empty_ones_and_expire_after_the_last_window():
    m = manager(window_length=Duration(10), window_slide=Duration(5))
    for now in (1.0, 6.0, 12.0):
        m.add(now, [now], now=now)
    assert describe(m.tick(30.0)) == [
        ("eval", -5, 5, [1.0], [1.0], []),
        ("eval", 0, 10, [1.0, 6.0], [6.0], []), ("expire", [1.0]),
        ("eval", 5, 15, [6.0, 12.0], [12.0], [1.0]), ("expire", [6.0]),
        ("eval", 10, 20, [12.0], [], [6.0]), ("expire", [12.0]),
    ]
    m.add(31.0, [31.0], now=31.0)
    evaluated = [(a[1], a[2], a[3]) for a in describe(m.tick(40.0)) if a[0] == "eval"]
    assert evaluated == [(25, 35, [31.0]), (30, 40, [31.0])]  # those ending at 25 and 30 are empty: skipped


def test_processing_time_is_never_late_even_if_the_clock_steps_back():
    m = manager(window_length=Duration(10))
    m.add("a", ["a"], now=5.0)
    m.tick(20.0)
    assert m.add("b", ["b"], now=15.0) == []  # stamped 20 (the watermark), not late
    assert describe(m.tick(30.0)) == [("eval", 20, 30, ["b"], ["b"], ["a"]), ("expire", ["b"])]


# -- event time ----------------------------------------------------------------------------------

EVENT = dict(window_length=Duration(10), window_slide=Duration(5), timestamp_field="ts", lag=3)


def feed(m, timestamps, now=0.0, source=("spout", 1)):
    """Add each timestamp (item = ts), with a tick a second after each; returns the actions."""
    out = []
    for ts in timestamps:
        now += 1.0
        out += m.add(ts, [ts], now=now, ts=ts, source=source)
        out += m.tick(now)
    return out


def test_event_time_windows_are_exact_when_disorder_is_within_the_lag():
    m = manager(**EVENT)
    out = feed(m, [1, 4, 3, 7, 6, 12, 9, 30])
    assert describe(out) == [
        ("eval", -5, 5, [1, 3, 4], [1, 3, 4], []),  # watermark 12 - 3 = 9 passes 5; 9 is then not late
        ("eval", 0, 10, [1, 3, 4, 6, 7, 9], [6, 7, 9], []), ("expire", [1, 4, 3]),
        ("eval", 5, 15, [6, 7, 9, 12], [12], [1, 3, 4]), ("expire", [7, 6, 9]),
        ("eval", 10, 20, [12], [], [6, 7, 9]), ("expire", [12]),
    ]
    assert m.watermark == 27 and m.held == 1  # 30 waits for a watermark past 35
    # The same input in order gives the same windows.
    ordered = manager(**EVENT)
    assert windows(feed(ordered, [1, 3, 4, 6, 7, 9, 12, 30])) == windows(out)


def test_tuples_behind_the_watermark_are_late_and_join_no_window():
    m = manager(**EVENT)
    feed(m, [1, 12])  # watermark 9
    assert m.watermark == 9
    assert describe(m.add(8, [8], now=10.0, ts=8, source=("spout", 1))) == [("late", 8)]
    assert m.add(9, [9], now=10.0, ts=9, source=("spout", 1)) == []  # at the watermark: on time
    assert windows(feed(m, [40], now=10.0)) == [[1, 9], [9, 12], [12]]


def test_the_watermark_is_the_slowest_source_task_minus_the_lag():
    m = manager(**EVENT)
    m.add("a", ["a"], now=0.0, ts=20, source=("left", 1))
    m.add("b", ["b"], now=0.0, ts=5, source=("right", 2))
    m.tick(1.0)
    assert m.watermark == 2
    m.add("b2", ["b2"], now=1.5, ts=30, source=("right", 2))
    m.tick(2.0)
    assert m.watermark == 17  # left's 20 - 3
    assert describe(m.add("old", ["old"], now=2.5, ts=4, source=("left", 1))) == [("late", "old")]
    m.tick(3.0)  # and a late tuple does not pull the watermark back
    assert m.watermark == 17


def test_the_watermark_moves_at_most_once_per_watermark_interval():
    m = manager(**EVENT, watermark_interval=2.0)
    m.add(1, [1], now=0.0, ts=10, source=None)
    m.tick(0.0)
    assert m.watermark == 7
    m.add(2, [2], now=0.5, ts=20, source=None)
    m.tick(1.0)
    assert m.watermark == 7  # too soon
    m.tick(2.0 - TICK_SLACK / 2)  # a tick a hair early still counts
    assert m.watermark == 17


def test_a_snapshot_round_trips_through_msgpack_and_the_restored_manager_carries_on():
    spec = spec_of(**EVENT)
    original = WindowManager(spec)
    before = feed(original, [1, 4, 3, 7, 12])
    data = msgpack.unpackb(msgpack.packb(original.snapshot()))
    restored = WindowManager.restore(spec, data, make_item=lambda values, source: values[0])
    assert restored.snapshot() == original.snapshot()
    rest = [6, 13, 30]
    assert windows(feed(original, rest, now=10.0)) == windows(feed(restored, rest, now=10.0))
    assert windows(before) == [[1, 3, 4]]


def test_count_snapshot_keeps_the_pending_tuples_and_the_trigger_count():
    spec = spec_of(window_length=Count(3), window_slide=Count(2))
    m = WindowManager(spec)
    for v in range(1, 4):
        m.add(v, [v, "x"], now=0.0)
    restored = WindowManager.restore(spec, msgpack.unpackb(msgpack.packb(m.snapshot())))
    assert describe(restored.add([4, "x"], [4, "x"], now=0.0)) == [
        ("eval", None, None, [[2, "x"], [3, "x"], [4, "x"]], [[3, "x"], [4, "x"]], [[1, "x"]]),
        ("expire", [[2, "x"], [3, "x"]]),
    ]


# -- declaration and configuration errors --------------------------------------------------------


@pytest.mark.parametrize("attrs, message", [
    ({}, "window_length is not set; set it to Count(n) or Duration(seconds)"),
    ({"window_length": 10}, "window_length must be Count(n) or Duration(seconds), got 10"),
    ({"window_length": Count(0)}, "window_length must be Count(n) with a whole number n >= 1, got Count(0)"),
    ({"window_length": Count(2.5)}, "window_length must be Count(n) with a whole number n >= 1, got Count(2.5)"),
    ({"window_length": Duration(10), "window_slide": Duration(-1)},
     "window_slide must be Duration(seconds) with seconds > 0, got Duration(-1)"),
    ({"window_length": Duration(10), "window_slide": Duration(20)},
     "window_slide Duration(20) is longer than window_length Duration(10); the slide must not exceed the length "
     "(equal to it: tumbling windows)"),
    ({"window_length": Count(10), "window_slide": Duration(5)},
     "window_length Count(10) and window_slide Duration(5) mix counts and durations, which is not supported; "
     "use Count for both or Duration for both"),
    ({"window_length": Duration(10), "lag": 2},
     "lag is set but timestamp_field is not; lag applies to event time only: set timestamp_field to the input "
     "field holding the event time, or remove lag"),
    ({"window_length": Duration(10), "watermark_interval": 2},
     "watermark_interval is set but timestamp_field is not; watermark_interval applies to event time only: set "
     "timestamp_field to the input field holding the event time, or remove watermark_interval"),
    ({"window_length": Duration(10), "late_stream": "late"},
     "late_stream is set but timestamp_field is not; late_stream applies to event time only: set timestamp_field "
     "to the input field holding the event time, or remove late_stream"),
    ({"window_length": Count(10), "timestamp_field": "ts"},
     "timestamp_field needs Duration windows, got window_length Count(10); event-time count windows are not "
     "supported"),
    ({"window_length": Duration(10), "timestamp_field": ""},
     "timestamp_field must be a field name (a non-empty string), got ''"),
    ({"window_length": Duration(10), "timestamp_field": "ts", "lag": -1},
     "lag must be a number of seconds >= 0, got -1"),
    ({"window_length": Duration(10), "timestamp_field": "ts", "watermark_interval": 0},
     "watermark_interval must be a number of seconds > 0, got 0"),
])
def test_invalid_declarations_name_the_setting_and_the_fix(attrs, message):
    with pytest.raises(TopologyError) as err:
        spec_of(**attrs)
    assert str(err.value) == f"{WHERE}: {message}"


@pytest.mark.parametrize("attrs, conf, message", [
    ({"window_length": Duration(20), "window_slide": Duration(10)}, {"topology.tick_interval": 1},
     "window_length + window_slide = 30 s exceeds topology.message_timeout = 20 s, so tuples would time out while "
     "they wait in the window; raise topology.message_timeout to at least 30, shorten the window, or make it a "
     "StatefulWindowedBolt (acked at each checkpoint)"),
    ({**EVENT, "window_length": Duration(15)}, {"topology.tick_interval": 1},
     "window_length + window_slide + lag = 23 s exceeds topology.message_timeout = 20 s, so tuples would time out "
     "while they wait in the window; raise topology.message_timeout to at least 23, shorten the window, or make it "
     "a StatefulWindowedBolt (acked at each checkpoint)"),
    ({"window_length": Count(800), "window_slide": Count(400)}, {},
     "window_length + window_slide = 1200 tuples exceeds topology.max_spout_pending = 1000, so the spouts would "
     "stop before a window fills; raise topology.max_spout_pending to at least 1200 (or null), shorten the "
     "window, or make it a StatefulWindowedBolt (acked at each checkpoint)"),
    ({"window_length": Duration(10), "window_slide": Duration(5)}, {},
     "time windows are evaluated on tick tuples, but topology.tick_interval is not set for it; declare the bolt "
     "with config={\"topology.tick_interval\": 1}"),
])
def test_windows_that_would_time_out_stall_or_get_no_ticks_are_rejected(attrs, conf, message):
    base = Config().merged({"topology.message_timeout": 20, **conf}, "test")
    with pytest.raises(TopologyError) as err:
        spec_of(**attrs).check_config(base, WHERE)
    assert str(err.value) == f"{WHERE}: {message}"


def test_the_limits_are_inclusive_and_off_without_acking():
    fits = Config().merged({"topology.message_timeout": 30, "topology.tick_interval": 1}, "test")
    spec_of(window_length=Duration(20), window_slide=Duration(10)).check_config(fits, WHERE)
    spec_of(window_length=Count(500)).check_config(Config(), WHERE)  # 500 + 500 = 1000 pending
    spec_of(window_length=Count(5000)).check_config(Config().merged({"topology.max_spout_pending": None}, "t"), WHERE)
    untracked = Config().merged({"topology.acker_executors": 0, "topology.tick_interval": 1}, "test")
    spec_of(window_length=Duration(100)).check_config(untracked, WHERE)


def test_component_config_asks_for_the_ticks_the_window_needs():
    def needs(**attrs):
        return type("Declared", (WindowedBolt,), attrs).component_config()

    assert needs(window_length=Count(5)) == {}
    assert needs(window_length=Duration(10), window_slide=Duration(5)) == {"topology.tick_interval": 1.0}
    assert needs(window_length=Duration(0.4)) == {"topology.tick_interval": 0.2}
    assert needs(**EVENT, watermark_interval=0.5) == {"topology.tick_interval": 0.5}
    assert needs(window_length=Count(0)) == {}  # invalid: prepare reports it


# -- end to end, in local mode -------------------------------------------------------------------


class ScriptedSpout(Spout):
    """Emits ``phases`` (lists of value lists) in turn, message ids counting from 0; phase i
    starts once every id in ``gates[i]`` is acked. Records acks and fails."""

    def __init__(self, phases, gates, outputs):
        self.phases = [[list(t) for t in p] for p in phases]
        self.gates = [set(g) for g in gates]
        self.outputs = outputs
        self.acked, self.failed = [], []

    def open(self, context):
        self.todo = [(i, t) for i, phase in enumerate(self.phases) for t in phase]
        self.next_id = 0

    def next_tuple(self):
        if self.todo and self.gates[self.todo[0][0]] <= set(self.acked):
            _, values = self.todo.pop(0)
            self.emit(values, msg_id=self.next_id)
            self.next_id += 1

    def ack(self, msg_id):
        self.acked.append(msg_id)

    def fail(self, msg_id):
        self.failed.append(msg_id)


def run_until(topology, until, conf=None, timeout=10.0):
    """Run ``topology`` in local mode until ``until(spouts, emitted)`` (bounded); returns both.
    ``spouts``: component -> its task instances; ``emitted``: (component, stream) -> value lists."""
    spouts, emitted, run = run_local_until(topology, until, conf, timeout)
    assert not run.errors, run.errors[0].details
    return spouts, emitted


def run_local_until(topology, until, conf=None, timeout=10.0):
    """:func:`run_until` that lets components raise: returns ``(spouts, emitted, run)``."""
    emitted = defaultdict(list)

    def capture(component, task, stream, values):
        emitted[(component, stream)].append(list(values))

    config = Config().merged(topology.config, "topology config").merged(conf or {}, "test config")
    cluster = LocalCluster(topology, config, capture=capture)
    spouts = {e.component: [r.instance for r in e.runners] for e in cluster.loop.spouts}
    deadline = time.monotonic() + timeout
    outcome = {}

    def done():
        if until(spouts, emitted):
            outcome["met"] = True
            return True
        return time.monotonic() > deadline

    run = cluster.run(until=done)
    assert outcome.get("met"), f"not done after {timeout} s: emitted {dict(emitted)}, errors {run.errors}"
    return spouts, emitted, run


class Batches(WindowedBolt):
    """Emits each window as [start, end, values of its 'v' field]."""

    outputs = ["start", "end", "vs"]

    def process_window(self, window):
        self.emit([window.start, window.end, [t["v"] for t in window.tuples]])


def subclass(base, **attrs):
    return type(base.__name__, (base,), attrs)


def test_count_windows_through_complete_topology():
    t = Topology("count-windows")
    t.spout("numbers", FixedTupleSpout([], ["v"]))
    t.bolt("w", subclass(Batches, window_length=Count(3), window_slide=Count(2))).global_("numbers")
    result = complete_topology(t, mock_sources={"numbers": [[v] for v in range(1, 8)]})
    assert result.emitted("w") == [[None, None, [1, 2]], [None, None, [2, 3, 4]], [None, None, [4, 5, 6]]]


def test_every_spout_tuple_is_acked_once_its_last_window_is_done():
    t = Topology("count-acks")
    t.spout("numbers", FixedTupleSpout([[v] for v in range(12)], ["v"]))
    t.bolt("w", subclass(Batches, window_length=Count(3))).global_("numbers")
    spouts, emitted = run_until(t, lambda s, e: len(s["numbers"][0].acked) == 12)
    assert [vs for _, _, vs in emitted[("w", "default")]] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert sorted(spouts["numbers"][0].acked) == list(range(12))
    assert spouts["numbers"][0].failed == []


def test_a_sliding_window_holds_its_newest_tuples_for_the_next_window():
    t = Topology("count-sliding-acks")
    t.spout("numbers", FixedTupleSpout([[v] for v in range(12)], ["v"]))
    t.bolt("w", subclass(Batches, window_length=Count(4), window_slide=Count(2))).global_("numbers")
    spouts, emitted = run_until(t, lambda s, e: len(s["numbers"][0].acked) == 10)
    assert emitted[("w", "default")][-1] == [None, None, [8, 9, 10, 11]]
    assert sorted(spouts["numbers"][0].acked) == list(range(10))  # 10 and 11 are in the next window too
    assert spouts["numbers"][0].failed == []


class FailEverything(Bolt):
    auto_ack = False

    def process(self, tup):
        self.fail(tup)


def test_window_results_are_anchored_to_every_tuple_of_the_window():
    t = Topology("count-anchors")
    t.spout("numbers", FixedTupleSpout([[v] for v in range(6)], ["v"]))
    t.bolt("w", subclass(Batches, window_length=Count(3))).global_("numbers")
    t.bolt("fail", FailEverything).shuffle("w")
    spouts, _ = run_until(t, lambda s, e: len(s["numbers"][0].failed) == 6)
    assert sorted(spouts["numbers"][0].failed) == list(range(6))  # a failed result fails its whole window
    assert spouts["numbers"][0].acked == []


class EventBatches(Batches):
    window_length = Duration(10)
    window_slide = Duration(5)
    timestamp_field = "ts"
    lag = 2
    watermark_interval = 0.05
    late_stream = "late"
    outputs = {"default": ["start", "end", "vs"], "late": ["tuple"]}

    def process_window(self, window):
        self.emit([window.start, window.end, [t["ts"] for t in window.tuples]])


def test_event_time_windows_late_tuples_and_acks_end_to_end():
    phase1 = [[ts, "x"] for ts in (0, 1, 3, 2, 4, 6, 5, 7, 9, 8)] + [[20, "x"]]  # ids 0..10
    phase2 = [[19, "x"], [3, "late"], [40, "x"]]  # ids 11..13; starts once 0..9 are acked
    spout = ScriptedSpout([phase1, phase2], [(), range(10)], ["ts", "v"])
    t = Topology("event-time")
    t.spout("readings", spout)
    t.bolt("w", EventBatches, config={"topology.tick_interval": 0.05}).global_("readings")
    spouts, emitted = run_until(t, lambda s, e: len(s["readings"][0].acked) == 13)
    assert emitted[("w", "default")] == [
        [-5, 5, [0, 1, 2, 3, 4]], [0, 10, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]], [5, 15, [5, 6, 7, 8, 9]],
        [10, 20, [19]], [15, 25, [19, 20]], [20, 30, [20]],
    ]
    assert emitted[("w", "late")] == [[[3, "late"]]]
    readings = spouts["readings"][0]
    assert sorted(readings.acked) == list(range(13))  # 13 (ts 40) waits for a watermark past 45
    assert readings.failed == []


def test_processing_time_windows_end_to_end_put_each_tuple_in_one_window_and_ack_it():
    bolt = subclass(Batches, window_length=Duration(0.2))
    t = Topology("processing-time")
    t.spout("numbers", FixedTupleSpout([[v] for v in range(20)], ["v"]))
    t.bolt("w", bolt, config=bolt.component_config()).global_("numbers")
    spouts, emitted = run_until(t, lambda s, e: len(s["numbers"][0].acked) == 20)
    results = emitted[("w", "default")]
    assert sorted(v for _, _, vs in results for v in vs) == list(range(20))
    for start, end, _ in results:
        assert end - start == pytest.approx(0.2) and round(end / 0.2, 6).is_integer()
    assert spouts["numbers"][0].failed == []


def test_prepare_rejects_an_undeclared_late_stream():
    bolt = subclass(EventBatches, outputs=["start", "end", "vs"])
    t = Topology("bad-late")
    t.spout("readings", FixedTupleSpout([[1, "x"]], ["ts", "v"]))
    t.bolt("w", bolt, config={"topology.tick_interval": 0.05}).global_("readings")
    with pytest.raises(TopologyRunError) as err:  # raised in prepare: reported as the bolt's error
        complete_topology(t)
    assert str(err.value.errors[0].error) == ("windowed bolt 'w': late_stream 'late' is not declared in outputs; "
                              "add \"late\": [\"tuple\"] to outputs")


def test_prepare_rejects_a_late_stream_of_several_fields():
    bolt = subclass(EventBatches, outputs={"default": ["start", "end", "vs"], "late": ["ts", "v"]})
    t = Topology("bad-late-fields")
    t.spout("readings", FixedTupleSpout([[1, "x"]], ["ts", "v"]))
    t.bolt("w", bolt, config={"topology.tick_interval": 0.05}).global_("readings")
    with pytest.raises(TopologyRunError) as err:  # raised in prepare: reported as the bolt's error
        complete_topology(t)
    assert str(err.value.errors[0].error) == ("windowed bolt 'w': late_stream 'late' must declare exactly one field (it carries the "
                              "late tuple's values as one list), e.g. \"late\": [\"tuple\"]; it declares ['ts', 'v']")


def test_prepare_rejects_time_windows_without_ticks():
    t = Topology("no-ticks")
    t.spout("readings", FixedTupleSpout([[1, "x"]], ["ts", "v"]))
    t.bolt("w", EventBatches, config={"topology.tick_interval": None}).global_("readings")
    with pytest.raises(TopologyRunError) as err:  # raised in prepare: reported as the bolt's error
        complete_topology(t)
    assert str(err.value.errors[0].error) == ("windowed bolt 'w': time windows are evaluated on tick tuples, but "
                              "topology.tick_interval is not set for it; declare the bolt with "
                              "config={\"topology.tick_interval\": 0.05}")


def test_a_timestamp_that_is_not_a_number_fails_the_tuple_and_says_why():
    t = Topology("bad-ts")
    t.spout("readings", FixedTupleSpout([["noon", "x"]], ["ts", "v"]))
    t.bolt("w", EventBatches, config={"topology.tick_interval": 0.05}).global_("readings")
    result = complete_topology(t, raise_errors=False)
    (error,) = result.errors
    assert str(error.error) == ("field 'ts' of Tuple(readings:1 default ['noon', 'x']) must be its event time in "
                                "seconds since the epoch (an int or float), got 'noon'")


# -- stateful windows ----------------------------------------------------------------------------


class Numbers(ReliableSpout):
    """Emits ``[v]`` for each of ``values`` (message id: its position), replaying what fails.
    With ``topology.max_spout_pending: 1`` one value is in flight at a time, so a replay
    keeps the order."""

    outputs = ["v"]

    def __init__(self, values, fields=("v",)):
        self.values = [v if isinstance(v, list) else [v] for v in values]
        self.outputs = list(fields)

    def open(self, context):
        self.todo = list(enumerate(self.values))
        self.todo.reverse()

    def next_message(self):
        return self.todo.pop() if self.todo else None


def acked(spout):
    return getattr(spout, "acked", 0)  # a ReliableSpout counts from its first next_tuple


class Sink(Bolt):
    """Acks every result (so anchored results are part of their inputs' trees)."""

    def process(self, tup):
        pass


class StatefulBatches(StatefulWindowedBolt):
    """Emits each window as [start, end, values of its 'v' field]; counts windows in its state."""

    outputs = ["start", "end", "vs"]

    def process_window(self, window):
        self.state["windows"] = self.state.get("windows", 0) + 1
        self.emit([window.start, window.end, [t["v"] for t in window.tuples]])


class StatefulEventBatches(StatefulWindowedBolt):
    window_length = Duration(10)
    window_slide = Duration(5)
    timestamp_field = "ts"
    watermark_interval = 0.05
    outputs = ["start", "end", "vs"]

    def process_window(self, window):
        self.emit([window.start, window.end, [t["ts"] for t in window.tuples]])


def state_conf(tmp_path, **settings):
    return {"topology.state.checkpoint_interval": 0.05, "topology.state.backend": "sqlite",
            "topology.state.sqlite.path": str(tmp_path / "state.sqlite"), **settings}


def committed_window(topology, conf, component="w"):
    """The committed state of ``component``'s one task: (its own keys, the held tuples' values in
    seq order, the window's meta record, seq -> values of every tuple record)."""
    config = Config().merged(conf, "test")
    [task] = topology.with_checkpointing(config).task_ids()[component]
    state = committed_state(topology.name, component, [task], config)[task]
    own = {k: v for k, v in state.items() if k != WINDOW_KEY and not (isinstance(k, tuple) and k[0] == WINDOW_KEY)}
    records = sorted((k[1], v) for k, v in state.items() if isinstance(k, tuple) and k[0] == WINDOW_KEY)
    held = [values for _, (_, values, _, _, _, is_held, _) in records if is_held]
    return own, held, state.get(WINDOW_KEY), {seq: record[1] for seq, record in records}


def count_topology(name, bolt, values):
    t = Topology(name)
    t.spout("numbers", Numbers(values))
    t.bolt("w", bolt, config=bolt.component_config()).global_("numbers")
    t.bolt("sink", Sink).shuffle("w")
    return t


def test_stateful_count_windows_are_exact_and_every_tuple_is_acked_even_while_it_waits_in_a_window(tmp_path):
    # One tuple in flight (max_spout_pending 1): a plain window of 4 sliding by 2 would stall (it needs 6);
    # a stateful one acks each tuple at the checkpoint after it joined the window.
    bolt = subclass(StatefulBatches, window_length=Count(4), window_slide=Count(2))
    t = count_topology("stateful-count", bolt, range(11))
    conf = state_conf(tmp_path, **{"topology.max_spout_pending": 1})
    spouts, emitted, run = run_local_until(t, lambda s, e: acked(s["numbers"][0]) == 11, conf)
    assert not run.errors, run.errors[0].details
    assert [vs for _, _, vs in emitted[("w", "default")]] == [[0, 1], [0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7],
                                                              [6, 7, 8, 9]]
    numbers = spouts["numbers"][0]
    assert numbers.pending_count == 0  # 10 is acked though it waits for the next window, as are 8 and 9
    own, held, meta, records = committed_window(t, conf)
    assert own == {"windows": 5}
    assert held == [[8], [9], [10]]
    assert records == {6: [6], 7: [7], 8: [8], 9: [9], 10: [10]}  # the last window [6..9] (for .expired) and 10
    assert meta["next_seq"] == 11 and meta["since_trigger"] == 1
    assert meta["schemas"] == [["numbers", "default", ["v"]]]


class FailFirstResult(Bolt):
    auto_ack = False

    def process(self, tup):
        if not getattr(self, "failed_one", False):
            self.failed_one = True
            self.fail(tup)
        else:
            self.ack(tup)


class RecordingNumbers(Numbers):
    def fail(self, msg_id):
        self.__dict__.setdefault("fails", []).append(msg_id)
        super().fail(msg_id)


def test_a_failed_result_replays_the_inputs_it_is_anchored_to_those_since_the_last_checkpoint(tmp_path):
    t = Topology("stateful-anchors")
    t.spout("numbers", RecordingNumbers(range(6)))
    t.bolt("w", subclass(StatefulBatches, window_length=Count(2))).global_("numbers")
    t.bolt("sink", FailFirstResult).shuffle("w")
    conf = state_conf(tmp_path, **{"topology.max_spout_pending": 1})
    spouts, emitted, run = run_local_until(t, lambda s, e: acked(s["numbers"][0]) == 6, conf)
    assert not run.errors, run.errors[0].details
    # [0, 1] is anchored to 1 only (0 was committed and acked at the checkpoint before): failing it replays 1,
    # which joins the window again, as a replayed input of any stateful bolt counts again.
    assert [vs for _, _, vs in emitted[("w", "default")]] == [[0, 1], [1, 2], [3, 4]]
    fails = spouts["numbers"][0].fails
    assert fails.count(1) == 1 and set(fails) <= {0, 1}  # 0 only before the window had its state


def test_stateful_event_time_windows_are_exact_and_the_tuple_still_waiting_is_acked(tmp_path):
    t = Topology("stateful-event")
    t.spout("readings", Numbers([[ts, "x"] for ts in [*range(10), 12, 30]], ["ts", "v"]))
    t.bolt("w", StatefulEventBatches, config=StatefulEventBatches.component_config()).global_("readings")
    t.bolt("sink", Sink).shuffle("w")
    conf = state_conf(tmp_path, **{"topology.max_spout_pending": 1})
    spouts, emitted, run = run_local_until(
        t, lambda s, e: acked(s["readings"][0]) == 12 and len(e[("w", "default")]) == 4, conf)
    assert not run.errors, run.errors[0].details
    assert emitted[("w", "default")] == [
        [-5, 5, [0, 1, 2, 3, 4]], [0, 10, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]], [5, 15, [5, 6, 7, 8, 9, 12]], [10, 20, [12]],
    ]
    assert spouts["readings"][0].pending_count == 0  # ts 30 waits for a watermark past 35, acked already


RESTARTS = {
    # bolt, first run's values, second run's values, the windows of the second run
    "count": (subclass(StatefulBatches, window_length=Count(6)), [0, 1, 2, 3], list(range(4, 12)),
              [[None, None, [0, 1, 2, 3, 4, 5]], [None, None, [6, 7, 8, 9, 10, 11]]]),
    "event time": (StatefulEventBatches, [[ts, "x"] for ts in range(5)], [[ts, "x"] for ts in (5, 6, 7, 8, 9, 12, 30)],
                   [[-5, 5, [0, 1, 2, 3, 4]], [0, 10, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]], [5, 15, [5, 6, 7, 8, 9, 12]],
                    [10, 20, [12]]]),
}


@pytest.mark.parametrize("kind", RESTARTS)
def test_a_stateful_window_survives_a_restart_with_the_tuples_committed_before_it(tmp_path, kind):
    bolt, first, second, windows = RESTARTS[kind]
    fields = ["v"] if kind == "count" else ["ts", "v"]

    def topology(values):
        t = Topology(f"stateful-restart-{kind.replace(' ', '-')}")
        t.spout("numbers", Numbers(values, fields))
        t.bolt("w", bolt, config=bolt.component_config()).global_("numbers")
        return t

    conf = state_conf(tmp_path, **{"topology.max_spout_pending": 1})
    _, emitted, run = run_local_until(topology(first), lambda s, e: acked(s["numbers"][0]) == len(first), conf)
    assert not run.errors and emitted[("w", "default")] == []  # part of a window, acked: committed
    _, held, _, _ = committed_window(topology(first), conf)
    assert held == [v if isinstance(v, list) else [v] for v in first]
    # A second process on the same file: its first window holds the first run's tuples.
    spouts, emitted, run = run_local_until(
        topology(second), lambda s, e: acked(s["numbers"][0]) == len(second) and len(e[("w", "default")]) == len(windows),
        conf)
    assert not run.errors, run.errors[0].details
    assert emitted[("w", "default")] == windows


def test_a_changed_window_declaration_is_refused_at_restart_naming_both(tmp_path):
    conf = state_conf(tmp_path)
    t = count_topology("stateful-redeclared", subclass(StatefulBatches, window_length=Count(6)), [1, 2])
    run_local_until(t, lambda s, e: acked(s["numbers"][0]) == 2, conf)
    t = count_topology("stateful-redeclared", subclass(StatefulBatches, window_length=Count(4)), [3])
    errors = []
    cluster = LocalCluster(t, Config().merged(conf, "test"), on_error=errors.append)
    deadline = time.monotonic() + 10
    cluster.run(until=lambda: bool(errors) or time.monotonic() > deadline)
    assert [str(e.error) for e in errors] == [
        "windowed bolt 'w': the committed window was declared with window_length Count(6), window_slide Count(6), "
        "timestamp_field None, and this bolt declares Count(4), Count(4), None; a window cannot be carried over to "
        "another declaration: declare the old one again, or run the new one under another component or topology "
        "name"]


class Totals(StatefulWindowedBolt):
    """Tumbling windows of 5; every value evaluated goes into the state's 'seen' list."""

    window_length = Count(5)
    outputs = ["vs"]

    def process_window(self, window):
        self.state["seen"] = self.state.get("seen", []) + [t["v"] for t in window.tuples]
        self.emit([[t["v"] for t in window.tuples]])


class FailOncePrepared(Totals):
    """Raises once in pre_prepare, after the window was written, while it holds part of a window
    and windows were evaluated since the last commit: both must be rolled back."""

    failed: list[int] = []

    def pre_prepare(self, txid):
        super().pre_prepare(txid)
        if not FailOncePrepared.failed and self.window_manager.held and len(self.state.get("seen", [])) >= 10:
            FailOncePrepared.failed.append(txid)
            raise RuntimeError("injected failure in pre_prepare")


class FailOnceEvaluated(Totals):
    """process_window raises once, on the third window."""

    failed: list[int] = []

    def process_window(self, window):
        if not FailOnceEvaluated.failed and len(self.state.get("seen", [])) == 10:
            FailOnceEvaluated.failed.append(1)
            raise RuntimeError("injected failure in process_window")
        super().process_window(window)


@pytest.mark.parametrize("bolt, errors", [
    (FailOncePrepared, ["injected failure in pre_prepare"]),
    (FailOnceEvaluated, ["injected failure in process_window",
                         "windowed bolt 'w': process_window raised on the window; checkpoint {txid} is failed so that "
                         "the window goes back to its last commit and the inputs since are replayed"]),
])
def test_a_rollback_neither_loses_nor_duplicates_window_contents(tmp_path, bolt, errors):
    bolt.failed = []
    values = list(range(42))
    t = count_topology(f"stateful-rollback-{bolt.__name__}", bolt, values)
    conf = state_conf(tmp_path, **{"topology.max_spout_pending": 3})  # a few tuples per checkpoint
    spouts, emitted, run = run_local_until(t, lambda s, e: acked(s["numbers"][0]) == 42, conf, timeout=20)
    assert bolt.failed
    reported = [str(e.error) for e in run.errors]
    assert len(reported) == len(errors)
    for got, want in zip(reported, errors):
        assert re.fullmatch(re.escape(want).replace(re.escape("{txid}"), r"\d+"), got), got
    assert spouts["numbers"][0].replayed > 0  # the rolled back inputs were failed and sent again
    own, held, _, _ = committed_window(t, conf)
    seen = own["seen"]
    assert len(seen) == 40 and sorted(seen + [v for [v] in held]) == values  # each value once: evaluated or held
    results = [vs for [vs] in emitted[("w", "default")]]
    assert set(seen) <= {v for vs in results for v in vs}  # results may repeat after a rollback, none is lost


def test_stateful_windows_validate_only_the_checkpoint_interval_against_the_timeout():
    base = {"topology.message_timeout": 20, "topology.tick_interval": 1}
    long_window = spec_of(window_length=Duration(100), window_slide=Duration(50))
    long_window.check_config(Config().merged(base, "test"), WHERE, stateful=True)  # fine: acked at checkpoints
    spec_of(window_length=Count(800), window_slide=Count(400)).check_config(Config(), WHERE, stateful=True)
    with pytest.raises(TopologyError) as err:
        long_window.check_config(Config().merged({**base, "topology.state.checkpoint_interval": 20}, "test"), WHERE,
                                 stateful=True)
    assert str(err.value) == (
        f"{WHERE}: a stateful window's tuples are acked when the checkpoint holding them commits, so "
        "topology.state.checkpoint_interval = 20 s must be below topology.message_timeout = 20 s; lower the "
        "interval or raise the timeout (the window's length does not count)")
    with pytest.raises(TopologyError) as err:  # time windows still need ticks
        long_window.check_config(Config().merged({"topology.tick_interval": None}, "test"), WHERE, stateful=True)
    assert "topology.tick_interval is not set" in str(err.value)


def test_the_bolts_state_hides_and_protects_the_window_keys():
    kv = KeyValueState()
    kv[WINDOW_KEY] = {"next_seq": 1}
    kv[(WINDOW_KEY, 0)] = [0.0, [1], 0, 1, False, True, False]
    kv["total"] = 3
    state = WindowedState(kv)
    assert dict(state) == {"total": 3} and len(state) == 1
    assert WINDOW_KEY not in state and (WINDOW_KEY, 0) not in state and state.get(WINDOW_KEY) is None
    state[("other", 0)] = 1
    state["total"] += 1
    state.delete("missing")
    assert kv["total"] == 4 and kv[("other", 0)] == 1
    for key in (WINDOW_KEY, (WINDOW_KEY, 0)):
        with pytest.raises(KeyError) as err:
            state[key] = 1
        assert err.value.args[0] == (f"state key {key!r} is reserved: it holds the window's contents; use another "
                                     "key")
        with pytest.raises(KeyError):
            del state[key]
    assert kv[WINDOW_KEY] == {"next_seq": 1}


def test_a_value_that_cannot_be_checkpointed_fails_its_tuple_and_says_why(tmp_path):
    t = Topology("stateful-unencodable")
    t.spout("numbers", Numbers([object()]))  # replayed until the window is initialised, then refused
    t.bolt("w", subclass(StatefulBatches, window_length=Count(2))).global_("numbers")
    errors = []
    cluster = LocalCluster(t, Config().merged(state_conf(tmp_path), "test"), on_error=errors.append)
    deadline = time.monotonic() + 10
    cluster.run(until=lambda: bool(errors) or time.monotonic() > deadline)
    assert errors, "no error reported"
    message = str(errors[0].error)
    assert message.startswith("windowed bolt 'w': Tuple(numbers:") and "cannot be kept in a stateful window" in message


# -- the docs and the example --------------------------------------------------------------------


def test_the_docs_examples_run():
    code_blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs/windowing.md").read_text(), re.S)
    assert code_blocks
    for code in code_blocks:
        exec(compile(code, "docs/windowing.md", "exec"), {"__name__": "doc_example"})


def test_the_sensor_example_averages_each_sensor_per_sliding_window():
    spec = importlib.util.spec_from_file_location("sensor_windows", ROOT / "examples" / "sensor_windows.py")
    example = importlib.util.module_from_spec(spec)
    sys.modules["sensor_windows"] = example
    spec.loader.exec_module(example)
    conf = {"sensors.speedup": 40}
    _, emitted = run_until(example.topology, lambda s, e: len(e[("average", "default")]) >= 4 * len(example.SENSORS),
                           conf=conf)
    rows = emitted[("average", "default")]
    assert {r[0] for r in rows} == set(example.SENSORS)
    for _sensor, start, end, avg, n in rows:
        assert end - start == 10 and end % 5 == 0 and n > 0
        assert example.LOW <= avg <= example.HIGH
    assert len({tuple(r[:3]) for r in rows}) == len(rows)  # one result per sensor and window
