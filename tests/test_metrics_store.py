"""Nimbus's metrics store: cumulative worker counters -> windows (pure logic)."""

from streamgale.nimbus.metrics import MetricsStore


def report(pid, executed, busy=0.0, emitted=0, slot="s:1"):
    return {"topology_id": "t", "slot": slot, "host": "h", "port": 1, "pid": pid, "cpu_percent": 5.0,
            "rss_mb": 40.0, "uptime_s": 1.0,
            "tasks": {"3": {"component": "count", "kind": "bolt", "queue": 2, "executed": executed, "acked": executed,
                            "failed": 0, "busy": busy, "latency_total": 0.0,
                            "emitted_by_stream": {"default": emitted}, "transferred_by_stream": {"default": emitted}}}}


def test_windows_are_differences_of_running_totals():
    m = MetricsStore()
    m.add(report(10, 100), now=0)
    m.add(report(10, 700, busy=3.0), now=400)
    m.add(report(10, 1000, busy=4.5), now=900)
    s = m.stats("t", now=900)
    comp = s["components"]["count"]
    assert comp["windows"]["all"]["executed"] == 1000
    assert comp["windows"]["600"]["executed"] == 1000 - 100  # since the checkpoint at 0 (>= 600 s ago)
    assert comp["windows"]["all"]["execute_latency_ms"] == 4.5
    assert comp["queue"] == 2 and comp["tasks"] == [3]
    assert s["tasks"]["3"]["host"] == "h"


def test_a_restarted_worker_adds_to_the_totals_instead_of_resetting_them():
    m = MetricsStore()
    m.add(report(10, 500, emitted=500), now=0)
    m.add(report(11, 200, emitted=200), now=5)  # new pid: counters started again at 0
    m.add(report(11, 300, emitted=300), now=10)
    s = m.stats("t", now=10)
    assert s["components"]["count"]["windows"]["all"]["executed"] == 800
    assert s["streams"]["count"]["default"]["all"] == 800


def test_stale_workers_drop_out_and_killed_topologies_are_forgotten():
    m = MetricsStore()
    m.add(report(10, 1), now=0)
    assert len(m.stats("t", now=10)["workers"]) == 1
    assert m.stats("t", now=100)["workers"] == []
    m.forget("t")
    assert m.stats("t", now=100)["components"] == {}


def test_an_ackers_malformed_messages_reach_the_stats_only_when_there_are_some():
    store = MetricsStore()
    base = {"topology_id": "t-1", "slot": "s:1", "host": "h", "port": 1, "pid": 7}
    store.add({**base, "tasks": {"1": {"component": "__acker", "kind": "acker", "executed": 10,
                                       "malformed": 0}}}, 100.0)
    assert "malformed" not in store.stats("t-1", 100.0)["components"]["__acker"]["windows"]["all"]
    store.add({**base, "tasks": {"1": {"component": "__acker", "kind": "acker", "executed": 12,
                                       "malformed": 3}}}, 102.0)
    assert store.stats("t-1", 102.0)["components"]["__acker"]["windows"]["all"]["malformed"] == 3


def task(component, kind, **counters):
    return {"component": component, "kind": kind, "queue": 0, "executed": 0, "acked": 0, "failed": 0, "busy": 0.0,
            "latency_total": 0.0, "emitted_by_stream": {}, "transferred_by_stream": {}, **counters}


def test_executors_sum_their_tasks_as_a_component_does():
    """Issue 19 (UI): a per-executor table, whose counts are the component's sums over fewer tasks."""
    m = MetricsStore()
    m.add({"topology_id": "t", "slot": "s:1", "host": "h", "port": 1, "pid": 7, "tasks": {
        "1": task("count", "bolt", executed=10, busy=1.0), "2": task("count", "bolt", executed=30, busy=1.0),
        "3": task("count", "bolt", executed=5, busy=0.5)}}, now=0)
    s = m.stats("t", now=10, executors=[("count", (1, 2)), ("count", (3,))])
    first, second = s["executors"]
    assert (first["component"], first["tasks"], second["tasks"]) == ("count", [1, 2], [3])
    assert first["windows"]["all"]["executed"] == 40 and second["windows"]["all"]["executed"] == 5
    assert first["windows"]["all"]["execute_latency_ms"] == 50.0  # 2 s over 40 tuples
    assert m.stats("t", now=10)["executors"] == []  # none asked for


def test_topology_totals_are_storms_emitted_by_every_component_and_acked_by_the_spouts():
    """Issue 19 (UI): the topology page's windowed stats table."""
    m = MetricsStore()
    m.add({"topology_id": "t", "slot": "s:1", "host": "h", "port": 1, "pid": 7, "tasks": {
        "1": task("words", "spout", acked=8, failed=2, latency_total=0.4, emitted_by_stream={"default": 10},
                  transferred_by_stream={"default": 10}),
        "2": task("count", "bolt", executed=10, acked=10, emitted_by_stream={"default": 10},
                  transferred_by_stream={"default": 4}),
        "3": task("__acker", "acker", executed=20, acked=20, emitted_by_stream={"__ack_ack": 8})}}, now=0)
    totals = m.stats("t", now=10)["totals"]
    assert set(totals) == {"600", "10800", "86400", "all"}
    assert totals["all"] == {"emitted": 20, "transferred": 14, "acked": 8, "failed": 2, "complete_latency_ms": 50.0}
    assert MetricsStore().stats("t", now=0)["totals"]["600"] == {
        "emitted": 0, "transferred": 0, "acked": 0, "failed": 0, "complete_latency_ms": None}
