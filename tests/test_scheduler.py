"""The scheduler is a pure function: feed it cluster state, check the placement."""

from collections import Counter

from streamgale.nimbus.scheduler import schedule

from streamgale.cluster.records import ACTIVE, Assignment, SupervisorInfo, TopologyRecord


def topology(tid="wc-1", workers=4, submitted_at=1.0, digest="d1", **parallelism):
    parallelism = parallelism or {"spout": 2, "split": 4, "count": 4}
    components = {name: {"kind": "bolt", "tasks": max(p, 4), "parallelism": p} for name, p in parallelism.items()}
    return TopologyRecord(tid, tid.split("-")[0], ACTIVE, {"components": components}, {}, digest, "t.py",
                          workers, dict(parallelism), submitted_at)


def supervisors(*ids, ports=(6700, 6701, 6702, 6703)):
    return {i: SupervisorInfo(i, f"host-{i}", tuple(ports)) for i in ids}


def placement(a: Assignment):
    """slot id -> set of executors."""
    return {sid: set(s.executors) for sid, s in a.slots.items()}


def where(a: Assignment):
    """executor -> slot id."""
    return {e: sid for sid, s in a.slots.items() for e in s.executors}


def check_valid(a: Assignment, rec: TopologyRecord, sups):
    placed = Counter(e for s in a.slots.values() for e in s.executors)
    assert placed == Counter(rec.executors()), "every executor in exactly one slot"
    loads = [len(s.executors) for s in a.slots.values()]
    assert max(loads) - min(loads) <= 1
    for sid, s in a.slots.items():
        assert sid == s.slot and s.port in sups[s.supervisor_id].ports
        assert s.host == sups[s.supervisor_id].host
    assert a.code_digest == rec.code_digest


def per_node(a: Assignment):
    return Counter(s.supervisor_id for s in a.slots.values())


def test_workers_spread_evenly_over_supervisors():
    rec, sups = topology(workers=4), supervisors("a", "b")
    a = schedule([rec], sups, {}, now=5.0)["wc-1"]
    check_valid(a, rec, sups)
    assert len(a.slots) == 4
    assert per_node(a) == {"a": 2, "b": 2}
    assert set(a.slots) == {"a:6700", "a:6701", "b:6700", "b:6701"}  # lowest ports first
    assert a.assigned_at == 5.0 and a.version == -1 and a.topology_id == "wc-1"


def test_spread_prefers_node_with_most_free_slots():
    sups = {"a": SupervisorInfo("a", "ha", (1, 2)), "b": SupervisorInfo("b", "hb", (1, 2, 3, 4))}
    a = schedule([topology(workers=3)], sups, {}, 0.0)["wc-1"]
    assert per_node(a) == {"a": 1, "b": 2}


def test_executors_spread_evenly_over_workers():
    rec, sups = topology(workers=3), supervisors("a", "b")  # 10 executors
    a = schedule([rec], sups, {}, 0.0)["wc-1"]
    check_valid(a, rec, sups)
    assert sorted(len(s.executors) for s in a.slots.values()) == [3, 3, 4]


def test_worker_count_is_honoured_and_capped_by_executors():
    sups = supervisors("a", "b", "c")
    for workers in (1, 2, 5, 7):
        assert len(schedule([topology(workers=workers)], sups, {}, 0.0)["wc-1"].slots) == workers
    tiny = topology(workers=6, spout=1, count=2)  # 3 executors: a 4th worker would sit idle
    assert len(schedule([tiny], sups, {}, 0.0)["wc-1"].slots) == 3


def test_unchanged_input_returns_the_current_assignment():
    rec, sups = topology(), supervisors("a", "b")
    first = schedule([rec], sups, {}, 1.0)["wc-1"]
    stored = Assignment.decode(first.encode(), version=7)  # as read back from ZooKeeper
    again = schedule([rec], sups, {"wc-1": stored}, 99.0)["wc-1"]
    assert again is stored
    assert again.version == 7 and again.assigned_at == 1.0


def test_dead_supervisor_moves_only_its_executors():
    rec, sups = topology(workers=4), supervisors("a", "b", "c")  # a:2, b:1, c:1
    before = schedule([rec], sups, {}, 1.0)["wc-1"]
    assert per_node(before) == {"a": 2, "b": 1, "c": 1}
    before = Assignment.decode(before.encode(), version=3)
    del sups["c"]
    after = schedule([rec], sups, {"wc-1": before}, 2.0)["wc-1"]
    check_valid(after, rec, sups)
    assert len(after.slots) == 4 and per_node(after) == {"a": 2, "b": 2}
    assert after.version == 3 and after.assigned_at == 2.0
    old, new = where(before), where(after)
    moved = {e for e in old if old[e] != new[e]}
    assert moved == {e for e, sid in old.items() if sid.startswith("c:")}
    for sid, s in before.slots.items():
        if not sid.startswith("c:"):
            assert after.slots[sid].executors == s.executors


def test_dead_port_is_replaced():
    rec, sups = topology(workers=2), supervisors("a", "b")
    before = schedule([rec], sups, {}, 1.0)["wc-1"]
    sups["b"] = SupervisorInfo("b", "host-b", (6701, 6702, 6703))  # b restarted without port 6700
    after = schedule([rec], sups, {"wc-1": before}, 2.0)["wc-1"]
    assert set(after.slots) == {"a:6700", "b:6701"}
    assert after.slots["a:6700"] == before.slots["a:6700"]


def test_rebalance_from_two_to_four_workers():
    rec, sups = topology(workers=2), supervisors("a", "b")
    before = schedule([rec], sups, {}, 1.0)["wc-1"]
    after = schedule([rec.with_(workers=4)], sups, {"wc-1": before}, 2.0)["wc-1"]
    check_valid(after, rec, sups)
    assert len(after.slots) == 4 and per_node(after) == {"a": 2, "b": 2}
    assert set(before.slots) < set(after.slots)
    old, new = where(before), where(after)
    stayed = sum(old[e] == new[e] for e in old)
    assert stayed == 6  # 10 executors on 4 slots: the two old slots keep 3 each


def test_rebalance_down_keeps_slots_and_spreads():
    rec, sups = topology(workers=4), supervisors("a", "b")
    before = schedule([rec], sups, {}, 1.0)["wc-1"]
    after = schedule([rec.with_(workers=2)], sups, {"wc-1": before}, 2.0)["wc-1"]
    check_valid(after, rec, sups)
    assert set(after.slots) < set(before.slots)
    assert per_node(after) == {"a": 1, "b": 1}


def test_parallelism_change_replaces_executors():
    rec, sups = topology(workers=2), supervisors("a", "b")
    before = schedule([rec], sups, {}, 1.0)["wc-1"]
    changed = rec.with_(parallelism={**rec.parallelism, "count": 2})
    after = schedule([changed], sups, {"wc-1": before}, 2.0)["wc-1"]
    check_valid(after, changed, sups)
    assert set(after.slots) == set(before.slots)
    assert len(changed.executors()) == 8
    # unchanged components stay where they were
    old, new = where(before), where(after)
    assert all(old[e] == new[e] for e in new if e[0] == "spout")


def test_new_code_digest_gives_a_new_assignment():
    rec, sups = topology(), supervisors("a", "b")
    before = schedule([rec], sups, {}, 1.0)["wc-1"]
    after = schedule([rec.with_(code_digest="d2")], sups, {"wc-1": before}, 2.0)["wc-1"]
    assert after.code_digest == "d2" and after.assigned_at == 2.0
    assert placement(after) == placement(before)
    assert not after.same_placement(before)


def test_two_topologies_do_not_share_slots():
    sups = supervisors("a", "b", ports=(1, 2, 3))
    first, second = topology("one-1", workers=4, submitted_at=1.0), topology("two-2", workers=4, submitted_at=2.0)
    out = schedule([second, first], sups, {}, 0.0)
    assert set(out["one-1"].slots).isdisjoint(out["two-2"].slots)
    assert len(out["one-1"].slots) == 4 and len(out["two-2"].slots) == 2  # earlier topology served first
    for tid, rec in (("one-1", first), ("two-2", second)):
        check_valid(out[tid], rec, sups)


def test_later_topology_keeps_its_slots_when_an_earlier_one_grows():
    sups = supervisors("a", ports=(1, 2, 3, 4))
    first, second = topology("one-1", workers=2, submitted_at=1.0), topology("two-2", workers=2, submitted_at=2.0)
    cur = schedule([first, second], sups, {}, 0.0)
    out = schedule([first.with_(workers=4), second], sups, cur, 1.0)
    assert out["two-2"] is cur["two-2"]
    assert len(out["one-1"].slots) == 2  # nothing free to grow into


def test_killed_topologies_slots_are_free():
    sups = supervisors("a", ports=(1, 2))
    old = topology("old-1", workers=2, submitted_at=1.0)
    cur = schedule([old], sups, {}, 0.0)
    new = topology("new-2", workers=2, submitted_at=2.0)
    out = schedule([new], sups, cur, 1.0)  # old was killed: the caller dropped it
    assert set(out) == {"new-2"} and len(out["new-2"].slots) == 2


def test_not_enough_slots_uses_what_there_is_then_grows():
    rec = topology(workers=4)
    sups = supervisors("a", ports=(1, 2))
    a = schedule([rec], sups, {}, 1.0)["wc-1"]
    assert len(a.slots) == 2
    check_valid(a, rec, sups)
    assert schedule([rec], sups, {"wc-1": a}, 2.0)["wc-1"] is a  # as many as possible: left alone
    sups.update(supervisors("b", ports=(1, 2)))
    grown = schedule([rec], sups, {"wc-1": a}, 3.0)["wc-1"]
    assert len(grown.slots) == 4 and set(a.slots) < set(grown.slots)


def test_no_slots_means_no_entry():
    rec = topology()
    assert schedule([rec], {}, {}, 0.0) == {}
    sups = supervisors("a", ports=(1,))
    first = topology("one-1", submitted_at=1.0)
    out = schedule([first, topology("two-2", submitted_at=2.0)], sups, {}, 0.0)
    assert set(out) == {"one-1"}


def test_all_slots_dead_and_none_free_means_no_entry():
    rec, sups = topology(workers=2), supervisors("a")
    cur = schedule([rec], sups, {}, 0.0)
    assert schedule([rec], {}, cur, 1.0) == {}


def test_deterministic():
    sups = supervisors("c", "a", "b", ports=(3, 1, 2))
    recs = [topology("x-1", workers=3, submitted_at=1.0), topology("y-2", workers=5, submitted_at=1.0),
            topology("z-3", workers=2, submitted_at=0.5)]
    first = schedule(recs, sups, {}, 1.0)
    for _ in range(5):
        again = schedule(list(reversed(recs)), dict(reversed(list(sups.items()))), {}, 1.0)
        assert again == first
        assert [list(a.slots) for a in again.values()] == [list(a.slots) for a in first.values()]
    # and with current assignments in the mix
    shrunk = {k: v for k, v in sups.items() if k != "b"}
    assert schedule(recs, shrunk, first, 2.0) == schedule(recs, shrunk, first, 2.0)


def test_worker_cap_says_why_a_topology_gets_fewer_workers_than_requested():
    from streamgale.nimbus.scheduler import worker_cap

    assert worker_cap(4, executors=10, free_slots=6) == (4, None)
    assert worker_cap(9, executors=10, free_slots=6) == (
        6, "9 workers requested, but the cluster has 6 free slots: it runs in 6 (add supervisors, or slots with "
           "`workers`, for the rest)")
    assert worker_cap(20, executors=10, free_slots=30) == (
        10, "20 workers requested, but it has 10 executors and a worker runs at least one: it gets at most 10")
