"""Metrics end to end: worker counters -> supervisors -> nimbus -> `stats`, on a real cluster."""

from __future__ import annotations

import json
import re
import sys

import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT

pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / "tests" / "topologies"))
import cluster_word_count as wc  # noqa: E402


def stats(cluster, name: str) -> dict:
    r = cluster.cli("stats", name, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def all_time(s: dict, component: str) -> dict:
    return s["components"][component]["windows"]["all"]


def test_stats_count_exactly_what_the_topology_did(cluster, tmp_path):
    n = 2000
    words = sum(wc.expected_counts(n).values())
    r = cluster.cli("submit", str(ROOT / "tests/topologies/cluster_word_count.py"), "-c", f"test.sentences={n}",
                    "-c", f"test.output_dir={tmp_path / 'out'}")
    assert r.returncode == 0, r.stderr

    def settled():
        s = stats(cluster, "cluster-wc")
        return s if "sink" in s["components"] and all_time(s, "sink")["executed"] == words \
            and all_time(s, "sentences")["acked"] == n else None
    s = cluster.wait(settled, timeout=60, message="stats to show every tuple")
    spout = all_time(s, "sentences")
    assert (spout["emitted"], spout["transferred"], spout["acked"], spout["failed"]) == (n, n, n, 0)
    assert spout["complete_latency_ms"] > 0
    split = all_time(s, "split")
    assert (split["executed"], split["emitted"], split["acked"]) == (n, words, n)
    count = all_time(s, "count")
    assert (count["executed"], count["emitted"], count["acked"]) == (words, words, words)
    assert count["execute_latency_ms"] > 0 and 0 <= count["capacity"] <= 1
    assert all_time(s, "sink")["executed"] == words
    assert sorted(s["components"]["count"]["tasks"]) == [1, 2, 3, 4]
    assert s["streams"]["split"]["default"]["all"] == words
    assert len(s["workers"]) == 2 and all(w["rss_mb"] > 0 for w in s["workers"])

    table = cluster.cli("stats", "cluster-wc", "--window", "all")
    assert table.returncode == 0, table.stderr
    line = next(l for l in table.stdout.splitlines() if l.startswith("sentences "))
    assert f"{n:,}" in line


def test_a_bolt_error_shows_in_stats(cluster):
    r = cluster.cli("submit", str(ROOT / "tests/topologies/faulty.py"), "-c", "test.total=200")
    assert r.returncode == 0, r.stderr

    def settled():  # each task's counts reach nimbus in its own report: wait until all 200 are counted
        s = stats(cluster, "faulty")
        done = all(c in s["components"] and all_time(s, c)["acked"] + all_time(s, c)["failed"] >= 200
                   for c in ("boom", "numbers"))
        return s if done else None
    s = cluster.wait(settled, timeout=60, message="all 200 numbers acked or failed in stats")
    assert all_time(s, "boom")["acked"] == 180 and all_time(s, "boom")["failed"] == 20
    assert all_time(s, "numbers")["failed"] == 20
    [last, *_] = reversed(s["errors"]["boom"])
    assert "ValueError: cannot handle" in last["message"] and last["task"] in (1, 2)
    table = cluster.cli("stats", "faulty").stdout
    assert "last error in boom" in table and "ValueError: cannot handle" in table


def test_logs_monitor_and_set_log_level(cluster, tmp_path):
    r = cluster.cli("submit", str(ROOT / "tests/topologies/cluster_word_count.py"), "-c", "test.sentences=1000000",
                    "-c", "test.rate=200", "-c", f"test.output_dir={tmp_path / 'out'}")
    assert r.returncode == 0, r.stderr
    cluster.wait(lambda: "sink" in stats(cluster, "cluster-wc")["components"], timeout=60, message="metrics")

    logs = cluster.cli("logs", "cluster-wc")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.count("worker for cluster-wc") == 2  # one start line from each worker
    for n in (0, 1, 5):  # lines, like tail -n: the last n of each of the two workers' logs (or all it has)
        tail = cluster.cli("logs", "cluster-wc", "-n", str(n)).stdout.splitlines()
        files = [f.read_text().splitlines() for f in cluster.dir.glob("supervisor-*/workers/*/worker.log")]
        assert len(files) == 2 and len(tail) == sum(min(n, len(lines)) for lines in files), tail
        assert all(re.match(r"\[127\.0\.0\.1:\d+\] \d{4}-", line) for line in tail), tail
    only = cluster.cli("logs", "cluster-wc", "-m", "sentences").stdout
    assert only.count("worker for cluster-wc") == 2  # both workers run a sentences task
    missing = cluster.cli("logs", "cluster-wc", "-m", "nope")
    assert (missing.returncode, missing.stderr) == (1, "error: topology 'cluster-wc' has no component 'nope' (its "
                                                       "components: count, sentences, sink, split)\n")

    r = cluster.cli("set-log-level", "cluster-wc", "streamgale.transport=DEBUG")
    assert r.returncode == 0, r.stderr
    cluster.wait(lambda: cluster.cli("logs", "cluster-wc").stdout.count(
        "log level of 'streamgale.transport' set to DEBUG") == 2, timeout=30, message="both workers to apply it")
    bad = cluster.cli("set-log-level", "cluster-wc", "x=LOUD")
    assert bad.returncode == 2 and bad.stderr.splitlines()[-1] == (
        "Error: Invalid value for 'LOGGER=LEVEL': LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any "
        "case), got 'LOUD'")

    mon = cluster.cli("monitor", "cluster-wc", "-i", "2", "-n", "2", "-m", "sentences")
    assert mon.returncode == 0, mon.stderr
    rates = [float(line.split("sentences ")[1].split("/s")[0].replace(",", "")) for line in mon.stdout.splitlines()]
    assert len(rates) == 2 and max(rates) > 0
