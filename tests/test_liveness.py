"""Nimbus's judgement of dead worker slots (pure logic, its own clock)."""

from streamgale.nimbus.liveness import SlotLiveness

from streamgale.cluster.records import Assignment, SlotAssignment, SupervisorInfo


def assignment(*slots: str) -> dict[str, Assignment]:
    return {"t": Assignment("t", "d", {s: SlotAssignment(s.split(":")[0], "h", int(s.split(":")[1]), (("c", (1,)),))
                                      for s in slots})}


def test_a_slot_that_stops_beating_is_dead_after_the_task_timeout():
    live = SlotLiveness(task_timeout=10, launch_timeout=30, blacklist=60, max_gap=100)
    a = assignment("s1:1", "s2:1")
    assert live.observe(a, {"t": {"s1:1": 0, "s2:1": 0}}, now=0) == set()
    assert live.observe(a, {"t": {"s1:1": 5, "s2:1": 5}}, now=5) == set()
    assert live.observe(a, {"t": {"s1:1": 9, "s2:1": 5}}, now=14.9) == set()
    assert live.observe(a, {"t": {"s1:1": 9, "s2:1": 5}}, now=15.1) == {"s2:1"}
    assert live.observe(a, {"t": {"s1:1": 9, "s2:1": 5}}, now=16) == set()  # reported once


def test_a_slot_that_never_beats_gets_the_launch_timeout_and_a_new_nimbus_gives_it_again():
    live = SlotLiveness(task_timeout=10, launch_timeout=30, max_gap=100)
    a = assignment("s1:1")
    assert live.observe(a, {}, now=100) == set()
    assert live.observe(a, {}, now=129) == set()
    assert live.observe(a, {}, now=130.5) == {"s1:1"}
    fresh = SlotLiveness(task_timeout=10, launch_timeout=30, max_gap=100)  # a nimbus that just took over
    assert fresh.observe(a, {"t": {"s1:1": 3}}, now=500) == set()
    assert fresh.observe(a, {"t": {"s1:1": 3}}, now=509) == set()


def test_dead_slots_are_kept_out_of_scheduling_for_the_blacklist_time():
    live = SlotLiveness(task_timeout=1, launch_timeout=1, blacklist=60, max_gap=100)
    sups = {"s1": SupervisorInfo("s1", "h", (1, 2)), "s2": SupervisorInfo("s2", "h", (1,))}
    a = assignment("s1:1")
    live.observe(a, {}, now=0)
    assert live.observe(a, {}, now=2) == {"s1:1"}
    assert live.usable(sups)["s1"].ports == (2,) and live.usable(sups)["s2"] == sups["s2"]
    live.observe({}, {}, now=62)
    assert live.usable(sups) == sups


def test_a_gap_in_observation_proves_nothing():
    live = SlotLiveness(task_timeout=10, launch_timeout=30, max_gap=3)
    a = assignment("s1:1")
    live.observe(a, {"t": {"s1:1": 4}}, now=0)
    assert live.observe(a, {"t": {"s1:1": 4}}, now=4) == set()
    # ZooKeeper was down from 4 to 19: no observation in between.
    assert live.observe(a, {"t": {"s1:1": 4}}, now=19) == set()
    assert live.observe(a, {"t": {"s1:1": 5}}, now=20) == set()
