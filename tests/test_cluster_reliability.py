"""Guaranteed processing and flow control on real worker processes over ZeroMQ."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT

pytestmark = pytest.mark.slow

TOPOLOGY = str(ROOT / "tests" / "topologies" / "reliable.py")
SLOW_RUN_SECONDS = 25
RSS_BOUND = 150 * 2**20


def lines(out: Path, kind: str) -> list[list[str]]:
    return [line.split() for f in out.glob(f"{kind}-*.txt") for line in f.read_text().splitlines() if line]


def submit(cluster, out: Path, *conf: str) -> None:
    args = ["submit", TOPOLOGY, "-c", f"test.output_dir={out}"]
    for c in conf:
        args += ["-c", c]
    result = cluster.cli(*args)
    assert result.returncode == 0, result.stderr + cluster.logs()


def slots_of(cluster_state, component: str) -> set[str]:
    [assignment] = cluster_state.assignments().values()
    return {sid for sid, s in assignment.slots.items() if any(c == component for c, _ in s.executors)}


def test_random_failures_across_workers_still_ack_every_message(cluster, cluster_state, tmp_path):
    out = tmp_path / "out"
    submit(cluster, out, "test.total=2000", "test.fail_rate=0.1")
    cluster.wait(lambda: len(cluster_state.assignments()) == 1, message="assignment")
    [assignment] = cluster_state.assignments().values()
    assert len(assignment.slots) == 2
    assert len(slots_of(cluster_state, "failer")) == 2  # tuples cross workers both ways

    def all_acked():
        return {int(n) for kind, n in lines(out, "spout") if kind == "ack"} == set(range(2000))
    cluster.wait(all_acked, timeout=90, message="every message acked")

    spout_fails = Counter(int(n) for kind, n in lines(out, "spout") if kind == "fail")
    bolt_fails = Counter(int(n) for _, n in lines(out, "failer"))
    assert len(bolt_fails) > 100  # about 27% of numbers see at least one of 3 children fail
    assert set(spout_fails) == set(bolt_fails)  # every fail the bolt caused reached the spout
    # One fail per failed attempt: a tree with two failed children fails once.
    assert all(1 <= spout_fails[n] <= bolt_fails[n] for n in spout_fails)
    acks = Counter(int(n) for kind, n in lines(out, "spout") if kind == "ack")
    assert set(acks.values()) == {1}  # acked exactly once each


def test_fast_spout_into_a_slow_bolt_is_throttled_with_bounded_memory(cluster, cluster_state, tmp_path):
    out = tmp_path / "out"
    submit(cluster, out, "test.mode=slow", "test.slow_ms=3")
    cluster.wait(lambda: len(cluster_state.assignments()) == 1, message="assignment")
    assert slots_of(cluster_state, "fast").isdisjoint(slots_of(cluster_state, "slow"))  # across workers
    cluster.wait(lambda: len(cluster.worker_processes()) == 2 and lines(out, "slow"), timeout=60,
                 message="the slow bolt to start")

    daemons = [psutil.Process(p.pid) for p in
               list(cluster.nimbus_procs.values()) + list(cluster.supervisor_procs.values())]
    workers = cluster.worker_processes()
    peak: dict[int, int] = {}
    at_quarter: dict[int, int] = {}
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < SLOW_RUN_SECONDS:
        for p in daemons + workers:
            rss = p.memory_info().rss
            peak[p.pid] = max(peak.get(p.pid, 0), rss)
            if elapsed >= SLOW_RUN_SECONDS / 4:
                at_quarter.setdefault(p.pid, rss)
        cluster.check_alive()
        time.sleep(1)  # sampling period of the measurement, not synchronisation

    assert max(peak.values()) < RSS_BOUND, {pid: rss >> 20 for pid, rss in peak.items()}
    for w in workers:  # flat after warm-up
        assert w.memory_info().rss - at_quarter[w.pid] < 20 * 2**20

    slow = [(float(t), int(done)) for t, done in lines(out, "slow")]
    fast = [(float(t), int(n), int(acked), int(failed), int(pending)) for t, n, acked, failed, pending in
            lines(out, "fast")]
    last_t, done = max(slow)
    _, emitted, acked, failed, pending = max(fast)
    assert failed == 0  # no timeouts, no replay storm
    assert pending <= 1000  # topology.max_spout_pending
    assert emitted <= done + 1000 + 100  # throttled to the bolt's pace
    recent = [d for t, d in slow if t >= last_t - 10]
    assert max(recent) > min(recent)  # still processing at the end
    assert done >= 1000
