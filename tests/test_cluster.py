"""The distributed cluster, end to end: real ZooKeeper, nimbus and supervisors
started through the CLI, real worker processes exchanging tuples over ZeroMQ."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT, run_cli, wait_for

pytestmark = pytest.mark.slow

TOPOLOGY = str(ROOT / "tests" / "topologies" / "cluster_word_count.py")
sys.path.insert(0, str(ROOT / "tests" / "topologies"))
import cluster_word_count as wc  # noqa: E402


def sink_lines(out: Path) -> list[tuple[str, int, int, int, int]]:
    """(word, count, count task, count instance (its pid * 1000 + n), sink pid) for every line the
    sinks wrote."""
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

    last = -1

    def stopped():
        """The output did not grow since the previous poll (half a second ago)."""
        nonlocal last
        cluster.check_alive()
        now, before = len(sink_lines(out)), last
        last = now
        return now == before
    wait_for(stopped, timeout=20, interval=0.5, message="output to stop")
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
    first_workers = {p.pid for p in cluster.worker_processes()}
    assert len(first_workers) == 2

    result = cluster.cli("rebalance", "cluster-wc", "-w", "1", "-n", "4", "-e", "count=4")
    assert result.returncode == 0, result.stderr
    after = wait_assigned(cluster, cluster_state, 4)
    count_executors = [e for s in after.slots.values() for e in s.executors if e[0] == "count"]
    assert sorted(count_executors) == [("count", (1,)), ("count", (2,)), ("count", (3,)), ("count", (4,))]
    assert len({s.supervisor_id for s in after.slots.values()}) == 2
    assert after.version > before.version

    def new_instances_output():
        instances = {i for *_, i, _ in sink_lines(out)}
        return len({i // 1000 for i in instances}) >= 4  # count tasks in the two first workers and two new ones
    cluster.wait(new_instances_output, timeout=60, message="output from the rebalanced executors")
    n = len(sink_lines(out))
    cluster.wait(lambda: len(sink_lines(out)) > n + 200, timeout=30, message="processing to continue")
    # Live: the two first workers took their new executors in place, none was restarted.
    workers = {p.pid for p in cluster.worker_processes()}
    assert len(workers) == 4 and first_workers <= workers, (first_workers, workers)
    info = json.loads(cluster.cli("info", "cluster-wc").stdout)
    assert "__worker" not in info["errors"], info["errors"]["__worker"]

    # Fields grouping: a word is always counted by the same task, before and after.
    tasks_per_word: dict[str, set[int]] = {}
    for word, _, task, *_ in sink_lines(out):
        tasks_per_word.setdefault(word, set()).add(task)
    assert all(len(t) == 1 for t in tasks_per_word.values()), tasks_per_word
    # With -w, in-flight tuples drained before executors moved: within one count instance's
    # lifetime, a word's counts rise by exactly one, nothing lost on the way.
    series: dict[tuple[str, int, int], list[int]] = {}
    for word, count, task, instance, _ in sink_lines(out):
        series.setdefault((word, task, instance), []).append(count)
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


# What a worker's frames may carry, by destination component: (its source component, a forged tuple
# of that source's stream: the word "forged", and numbers where the sink writes numbers).
INPUTS = {"count": ("split", ["forged"]), "sink": ("count", ["forged", 1, 0, 0]), "split": ("sentences", ["forged"])}


def bad_entries(local: dict[str, tuple[int, ...]], remote_task: int, source_tasks: dict[str, tuple[int, ...]]):
    """Version-3 tuple groups for a worker running ``local`` (component -> tasks), each with one
    thing wrong; were any delivered, the word "forged" would reach the sinks."""
    receivers = [c for c in INPUTS if c in local]
    assert receivers, f"the worker runs none of {sorted(INPUTS)}: {local}"
    dest_component = receivers[0]
    source, v = INPUTS[dest_component]
    dest, src = local[dest_component][0], source_tasks[source][0]
    return {
        "unknown dest task": [9999, src, "default", [v], None, None, None],
        "dest task of the other worker": [remote_task, src, "default", [v], None, None, None],
        "unknown source task": [dest, 9999, "default", [v], None, None, None],
        "undeclared stream": [dest, src, "nope", [v], None, None, None],
        "system stream its source does not send": [dest, src, "__ack_result", [[[], []]], None, None, None],
        "one field too many": [dest, src, "default", [v + ["extra"]], None, None, None],
        "one field too few": [dest, src, "default", [v[:-1]], None, None, None],
        "values not a list": [dest, src, "default", ["forged"], None, None, None],
        "values lists not a list": [dest, src, "default", "forged", None, None, None],
        "roots not parallel": [dest, src, "default", [v, v], [1], [2, 3], None],
        "edges not parallel": [dest, src, "default", [v, v], [1, 2], [3], None],
        "roots not a list": [dest, src, "default", [v], {1: 2}, [3], None],
        "edges without roots": [dest, src, "default", [v], None, [3], None],
        "root a string": [dest, src, "default", [v], ["root"], [2], None],
        "edge a float": [dest, src, "default", [v], [1], [2.5], None],
        "edge a bool": [dest, src, "default", [v], [1], [True], None],
        "anchor root a string": [dest, src, "default", [v], [0], [0], {0: {"root": 2}}],
        "anchor edge a string": [dest, src, "default", [v], [0], [0], {0: {1: "edge"}}],
        "anchors not a map": [dest, src, "default", [v], [0], [0], [[1, 2]]],
        "entry of six fields": [dest, src, "default", [v], None, None],
        "entry not a list": "forged",
    }


def test_garbage_on_nimbus_and_worker_ports_is_survived(cluster, cluster_state, tmp_path):
    import msgpack
    import zmq

    out = tmp_path / "out"
    sentences = 2000  # 10 s at 100 sentences/s per spout task: garbage arrives while it runs
    submit(cluster, out, "-c", f"test.sentences={sentences}", "-c", "test.rate=100")
    assignment = wait_assigned(cluster, cluster_state, 2)
    cluster.wait(lambda: len(sink_lines(out)) > 50, timeout=60, message="output")
    workers = {p.pid for p in cluster.worker_processes()}
    assert len(workers) == 2
    slots = list(assignment.slots.values())
    tasks: dict[str, tuple[int, ...]] = {}
    for slot in slots:
        for component, ts in slot.executors:
            tasks[component] = tuple(sorted(tasks.get(component, ()) + tuple(ts)))

    for port in (cluster.nimbus_port, *(s.port for s in slots)):
        with socket.create_connection(("127.0.0.1", port)) as s:  # not even ZMTP
            s.sendall(bytes(range(256)) * 64)
    ctx = zmq.Context.instance()
    header_garbage = (b"\xff\x00garbage", b"\x93\x01\xa1T\x91\x95\x63\x01\xa7default\x90\xc0",  # version 1
                      msgpack.packb([2, "T", [[1, 1, "default", [["forged"]], None]]]),  # version 2
                      b"\x92\x01\x02", b"x" * 100_000, msgpack.packb([3, "X", []]), msgpack.packb([3, "T", 5]))
    for index, slot in enumerate(slots):
        local: dict[str, tuple[int, ...]] = {}
        for component, ts in slot.executors:
            local[component] = local.get(component, ()) + tuple(ts)
        other = next(t for o in slots if o is not slot for _, ts in o.executors for t in ts)
        entries = list(bad_entries(local, other, tasks).values())
        frames = [msgpack.packb([3, "T", [entry]], use_bin_type=True) for entry in entries]
        frames.append(msgpack.packb([3, "T", entries], use_bin_type=True))  # all of them in one frame
        # The transport logs one drop per few seconds: the first of each worker's garbage is what
        # its log shows, so one worker gets the bad entries first and the other the bad headers.
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 5000)  # close() delivers what was sent
        sock.connect(f"tcp://127.0.0.1:{slot.port}")
        for frame in (frames + list(header_garbage)) if index == 0 else (list(header_garbage) + frames):
            sock.send(frame)
        sock.close()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(f"tcp://127.0.0.1:{cluster.nimbus_port}")
    for frame in header_garbage:
        sock.send(frame)
    sock.close()

    def worker_log(port: int) -> str:
        return "".join(f.read_text() for f in tmp_path.glob(f"supervisor-*/workers/{port}/worker.log"))
    cluster.wait(lambda: "dropped a malformed tuple" in worker_log(slots[0].port), timeout=30,
                 message="the first worker to drop the bad entries")
    cluster.wait(lambda: "dropped a malformed frame" in worker_log(slots[1].port), timeout=30,
                 message="the second worker to drop the bad frames")
    assert cluster.cli("list").returncode == 0

    # Every real tuple counted exactly once, nothing forged counted, by the same two workers.
    expected = wc.expected_counts(sentences)

    def exact() -> bool:
        counts = final_counts(out)
        assert "forged" not in counts, "a worker delivered a malformed entry"
        return counts == expected
    cluster.wait(exact, timeout=60, message="exact counts of every sentence")
    assert len(sink_lines(out)) == sum(expected.values())  # each word counted once, none twice
    assert {p.pid for p in cluster.worker_processes()} == workers  # neither worker died and was restarted

    # What was dropped reaches the metrics: `streamgale stats` shows it per worker.
    def dropped() -> dict[int, dict]:
        r = cluster.cli("stats", "cluster-wc", "--json")
        return {w["port"]: w.get("transport", {}) for w in json.loads(r.stdout)["workers"]} if r.returncode == 0 else {}
    counts = cluster.wait(lambda: (lambda d: d if len(d) == 2 and all(t.get("dropped_entries", 0) >= len(entries)
                                                                      and t.get("dropped_frames", 0) >= 1
                                                                      for t in d.values()) else None)(dropped()),
                          timeout=30, message="dropped frames and tuples in the stats of both workers")
    assert set(counts) == {s.port for s in slots}
    text = cluster.cli("stats", "cluster-wc").stdout
    assert "malformed frames and" in text and "tuples on its port" in text


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
