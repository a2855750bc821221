"""The distributed cluster, end to end: real ZooKeeper, nimbus and supervisors
started through the CLI, real worker processes exchanging tuples over ZeroMQ."""

from __future__ import annotations

import socket
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

TOPOLOGY = str(ROOT / "tests" / "topologies" / "cluster_word_count.py")
sys.path.insert(0, str(ROOT / "tests" / "topologies"))
import cluster_word_count as wc  # noqa: E402


def sink_lines(out: Path) -> list[tuple[str, int, int, int, int]]:
    """(word, count, count task, count pid, sink pid) for every line the sinks wrote."""
    lines = []
    for f in out.glob("sink-*.txt"):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                lines.append((parts[0], *map(int, parts[1:])))
    return lines


def final_counts(out: Path) -> Counter:
    finals: Counter = Counter()
    for word, count, *_ in sink_lines(out):
        finals[word] = max(finals[word], count)
    return finals


def submit(cluster, out: Path, *extra: str, name: str | None = None):
    args = ["submit", TOPOLOGY, "-c", f"test.output_dir={out}", *extra]
    if name:
        args += ["--name", name]
    result = cluster.cli(*args)
    assert result.returncode == 0, result.stderr + cluster.logs()
    return result


def wait_assigned(cluster, cluster_state, workers: int, timeout: float = 30):
    def assigned():
        for a in cluster_state.assignments().values():
            if len(a.slots) == workers:
                return a
        return None
    return cluster.wait(assigned, timeout=timeout, message=f"an assignment with {workers} workers")


def test_word_count_on_two_workers_matches_local_mode(cluster, cluster_state, tmp_path):
    from streamgale.config import Config
    from streamgale.testing import complete_topology

    out = tmp_path / "out"
    result = submit(cluster, out, "-c", "test.sentences=3000")
    assert "submitted topology 'cluster-wc' as cluster-wc-" in result.stdout
    assignment = wait_assigned(cluster, cluster_state, 2)
    assert len({s.supervisor_id for s in assignment.slots.values()}) == 2  # one worker on each node

    # The same topology in local mode gives the reference counts.
    local = complete_topology(wc.topology, config=Config().merged(
        {"test.sentences": 3000, "test.output_dir": str(tmp_path / "local")}, "test"))
    reference: Counter = Counter()
    for word, count, *_ in local.emitted("count"):
        reference[word] = max(reference[word], count)
    assert reference == wc.expected_counts(3000)

    cluster.wait(lambda: final_counts(out) == reference, timeout=60, message="cluster counts to match local mode")
    assert len({sink_pid for *_, sink_pid in sink_lines(out)}) == 2  # both workers' sinks wrote
    assert len(cluster.worker_processes()) == 2

    listing = cluster.cli("list")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("cluster-wc "))
    # status, workers, executors, tasks: 8 executors (10 tasks) of the topology + 2 ackers
    assert row.split()[2:6] == ["ACTIVE", "2", "10", "12"]

    killed = cluster.cli("kill", "cluster-wc", "-w", "0")
    assert killed.returncode == 0, killed.stderr
    cluster.wait(lambda: not cluster.worker_processes(), timeout=30, message="workers to stop")
    cluster.wait(lambda: not cluster_state.topologies() and not cluster_state.assignments(), timeout=10,
             message="topology state to be removed")
    assert cluster.cli("list").stdout.strip() == "No topologies running."


def test_deactivate_stops_the_spouts_and_activate_resumes(cluster, cluster_state, tmp_path):
    out = tmp_path / "out"
    submit(cluster, out, "-c", "test.sentences=1000000", "-c", "test.rate=100")
    cluster.wait(lambda: len(sink_lines(out)) > 200, timeout=60, message="output")
    assert cluster.cli("deactivate", "cluster-wc").returncode == 0

    def stable():
        before = len(sink_lines(out))
        time.sleep(0.5)
        return len(sink_lines(out)) == before
    cluster.wait(stable, timeout=20, message="output to stop")
    stopped_at = len(sink_lines(out))
    info = cluster.cli("list").stdout
    assert "INACTIVE" in info

    assert cluster.cli("activate", "cluster-wc").returncode == 0
    cluster.wait(lambda: len(sink_lines(out)) > stopped_at + 100, timeout=30, message="output to resume")


def test_rebalance_to_four_workers_keeps_keys_on_their_tasks(cluster, cluster_state, tmp_path):
    out = tmp_path / "out"
    submit(cluster, out, "-c", "test.sentences=1000000", "-c", "test.rate=100")
    before = wait_assigned(cluster, cluster_state, 2)
    cluster.wait(lambda: len(sink_lines(out)) > 200, timeout=60, message="output")

    result = cluster.cli("rebalance", "cluster-wc", "-w", "1", "-n", "4", "-e", "count=4")
    assert result.returncode == 0, result.stderr
    after = wait_assigned(cluster, cluster_state, 4)
    count_executors = [e for s in after.slots.values() for e in s.executors if e[0] == "count"]
    assert sorted(count_executors) == [("count", (1,)), ("count", (2,)), ("count", (3,)), ("count", (4,))]
    assert len({s.supervisor_id for s in after.slots.values()}) == 2
    assert after.version > before.version

    def new_workers_output():
        pids = {pid for *_, pid, _ in sink_lines(out)}
        return len(pids) >= 4  # the two first count workers, then the two new ones
    cluster.wait(new_workers_output, timeout=60, message="output from the rebalanced workers")
    n = len(sink_lines(out))
    cluster.wait(lambda: len(sink_lines(out)) > n + 200, timeout=30, message="processing to continue")

    # Fields grouping: a word is always counted by the same task, before and after.
    tasks_per_word: dict[str, set[int]] = {}
    for word, _, task, *_ in sink_lines(out):
        tasks_per_word.setdefault(word, set()).add(task)
    assert all(len(t) == 1 for t in tasks_per_word.values()), tasks_per_word
    # With -w, in-flight tuples drained before workers moved: within one count task's
    # lifetime (one process), a word's counts rise by exactly one, nothing lost on the way.
    series: dict[tuple[str, int, int], list[int]] = {}
    for word, count, task, pid, _ in sink_lines(out):
        series.setdefault((word, task, pid), []).append(count)
    for (word, _, _), counts in series.items():
        counts.sort()
        assert counts == list(range(counts[0], counts[0] + len(counts))), (word, counts[:20])


def test_nimbus_restart_loses_no_topology(cluster, cluster_state, tmp_path):
    out = tmp_path / "out"
    submit(cluster, out, "-c", "test.sentences=1000000", "-c", "test.rate=50")
    wait_assigned(cluster, cluster_state, 2)
    cluster.wait(lambda: len(sink_lines(out)) > 50, timeout=60, message="output")
    workers = {p.pid for p in cluster.worker_processes()}

    old = cluster.nimbus_procs.pop(0)
    old.kill()
    old.wait()
    n = len(sink_lines(out))
    cluster.wait(lambda: len(sink_lines(out)) > n + 50, timeout=30, message="workers to go on without nimbus")
    cluster.start_nimbus()

    def listed():
        r = cluster.cli("list")
        return r.returncode == 0 and "cluster-wc" in r.stdout and "ACTIVE" in r.stdout
    cluster.wait(listed, timeout=30, message="the restarted nimbus to list the topology")
    assert {p.pid for p in cluster.worker_processes()} == workers  # nothing was restarted
    info = cluster.cli("info", "cluster-wc")
    assert info.returncode == 0 and '"status": "ACTIVE"' in info.stdout


def test_garbage_on_nimbus_and_worker_ports_is_survived(cluster, cluster_state, tmp_path):
    import zmq

    out = tmp_path / "out"
    submit(cluster, out, "-c", "test.sentences=1000000", "-c", "test.rate=100")
    assignment = wait_assigned(cluster, cluster_state, 2)
    cluster.wait(lambda: len(sink_lines(out)) > 50, timeout=60, message="output")
    worker_port = next(iter(assignment.slots.values())).port

    for port in (cluster.nimbus_port, worker_port):
        with socket.create_connection(("127.0.0.1", port)) as s:  # not even ZMTP
            s.sendall(bytes(range(256)) * 64)
    ctx = zmq.Context.instance()
    for port in (cluster.nimbus_port, worker_port):
        kind = zmq.DEALER if port == cluster.nimbus_port else zmq.PUSH
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 5000)  # close() delivers what was sent
        sock.connect(f"tcp://127.0.0.1:{port}")
        for frame in (b"\xff\x00garbage", b"\x93\x01\xa1T\x91\x95\x63\x01\xa7default\x90\xc0",
                      b"\x92\x01\x02", b"x" * 100_000):
            sock.send(frame)
        sock.close()

    assert cluster.cli("list").returncode == 0
    n = len(sink_lines(out))
    cluster.wait(lambda: len(sink_lines(out)) > n + 100, timeout=30, message="processing to continue")
    assert len(cluster.worker_processes()) == 2
    assert "dropped a malformed" in "".join(
        f.read_text() for f in tmp_path.glob("supervisor-*/workers/*/worker.log"))


def test_invalid_topology_is_rejected_before_upload(cluster, cluster_state, tmp_path):
    bad = tmp_path / "bad_topology.py"
    bad.write_text(Path(TOPOLOGY).read_text() + "\ntopology.bolt('oops', Count).fields('split', 'nope')\n")
    result = cluster.cli("submit", str(bad))
    assert result.returncode == 2
    assert "bolt 'oops' groups stream 'default' of 'split' by field 'nope', which is not declared" in result.stderr
    assert cluster_state.topologies() == {}


def test_duplicate_name_and_unknown_topology_are_clear_errors(cluster, cluster_state, tmp_path):
    submit(cluster, tmp_path / "out", "-c", "test.sentences=10")
    again = cluster.cli("submit", TOPOLOGY, "-c", f"test.output_dir={tmp_path}")
    assert again.returncode == 1
    assert "a topology named 'cluster-wc' is already running" in again.stderr
    missing = cluster.cli("kill", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no topology named 'nope' is running (see `streamgale list`)"


def test_unreachable_nimbus_fails_fast():
    start = time.monotonic()
    result = run_cli("--nimbus", "127.0.0.1:1", "list")
    assert result.returncode == 1
    assert "cannot reach nimbus at 127.0.0.1:1" in result.stderr
    assert time.monotonic() - start < 15
