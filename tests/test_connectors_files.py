"""The file connectors (issue 14): DirectorySource commits byte offsets on ack; RotatingFileSink.

In-process tests run the topology in local mode until every expected line is committed
(the run's ``until``), then check exact sets: what was emitted, what the offsets files
hold, what a second run over the same directories emits. The slow test kills and
resubmits a topology on a real cluster.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT

from streamgale import Bolt, Config, LocalCluster, Topology
from streamgale.config import ConfigError
from streamgale.connectors.files import DirectorySource, LineId, RotatingFileSink, read_offsets
from streamgale.runtime.executor import StartFailed

TOPOLOGY_NAME = "files"


# -- helpers ------------------------------------------------------------------------------------


def write_lines(path: Path, lines: list[str], mode: str = "a") -> None:
    with open(path, mode) as f:
        f.write("".join(line + "\n" for line in lines))


def line_index(path: Path) -> dict[int, str]:
    """Byte offset -> line (without its newline) of every complete line of ``path``."""
    out, pos = {}, 0
    for raw in path.read_bytes().split(b"\n")[:-1]:
        out[pos] = raw.decode()
        pos += len(raw) + 1
    return out


def all_lines(directory: Path, pattern: str = "*.txt") -> set[tuple[str, int, str]]:
    return {(p.name, off, line) for p in directory.glob(pattern) for off, line in line_index(p).items()}


def config(directory: Path, **settings) -> Config:
    return Config().merged({"files.dir": str(directory), "files.pattern": "*.txt",
                            "files.poll_interval": 0.01, **settings}, "test")


class Collect(Bolt):
    """Records (file, offset, line) of every tuple it processes (class-level: one process)."""

    seen: list[tuple[str, int, str]] = []

    def process(self, tup):
        Collect.seen.append(tup.values[0])


class Tag(Bolt):
    """Turns the line into (file, offset, line) using nothing but the text (the lines say where they are)."""

    outputs = ["where"]

    def process(self, tup):
        name, off, _ = tup.values[0].split(":", 2)
        self.emit([(name, int(off), tup.values[0])])


def numbered(name: str, start_offset: int, count: int, width: int = 0) -> list[str]:
    """Lines that say where they are: "name:offset:payload" (so a bolt can check them)."""
    lines, pos = [], start_offset
    for i in range(count):
        body = f"{name}:{pos:08d}:" + "x" * ((i * 7 + width) % 13)
        lines.append(body)
        pos += len(body) + 1
    return lines


def make_file(directory: Path, name: str, count: int) -> Path:
    path = directory / name
    start = path.stat().st_size if path.exists() else 0
    write_lines(path, numbered(name, start, count))
    return path


def spouts(cluster: LocalCluster) -> list[DirectorySource]:
    return [r.instance for e in cluster.loop.spouts for r in e.runners if isinstance(r.instance, DirectorySource)]


def sizes(directory: Path, pattern: str = "*.txt") -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.glob(pattern)}


def committed(cluster: LocalCluster) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in spouts(cluster):
        out.update(s.committed_offsets())
    return out


def pipeline(source=DirectorySource, bolt=Collect, spout_parallelism=2, name=TOPOLOGY_NAME) -> Topology:
    t = Topology(name)
    t.spout("files", source, parallelism=spout_parallelism)
    t.bolt("tag", Tag, parallelism=2).shuffle("files")
    t.bolt("collect", bolt).shuffle("tag")
    return t


def run(topology: Topology, conf: Config, until, timeout: float = 30.0) -> LocalCluster:
    cluster = LocalCluster(topology, conf)
    result = cluster.run(duration=timeout, until=lambda: until(cluster))
    assert until(cluster), (f"not done in {timeout} s: committed {committed(cluster)}", result.errors)
    return cluster


def all_committed(directory: Path, pattern: str = "*.txt"):
    return lambda cluster: committed(cluster) == sizes(directory, pattern) and bool(sizes(directory, pattern))


@pytest.fixture(autouse=True)
def fresh_collect():
    Collect.seen = []
    yield
    Collect.seen = []


# -- exactness ----------------------------------------------------------------------------------


def test_every_line_of_several_files_is_emitted_once_and_its_offset_committed(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        make_file(src, f"f{i}.txt", 120 + i)
    (src / "ignored.log").write_text("not matching the pattern\n")
    cluster = run(pipeline(), config(src), all_committed(src))
    assert sorted(Collect.seen) == sorted(all_lines(src))  # each line exactly once
    # The offsets files: one per task, each holding only the files that task owns, at their ends.
    offsets_dir = src / ".streamgale-offsets"
    files = sorted(p.name for p in offsets_dir.glob("*.json"))
    assert files == [f"{TOPOLOGY_NAME}-files-0.json", f"{TOPOLOGY_NAME}-files-1.json"]
    owned = [set(json.loads((offsets_dir / f).read_text())["files"]) for f in files]
    assert not owned[0] & owned[1] and owned[0] | owned[1] == set(sizes(src))
    assert read_offsets(offsets_dir, TOPOLOGY_NAME, "files") == sizes(src)
    entry = json.loads((offsets_dir / files[0]).read_text())["files"]
    name = next(iter(entry))
    assert entry[name] == {"offset": (src / name).stat().st_size, "inode": (src / name).stat().st_ino,
                           "generation": 0}
    for s in spouts(cluster):
        counters = s.counters()
        assert counters["lag"] == 0 and counters["pending"] == 0 and counters["dead_lettered"] == 0
        assert counters["fetched"] == counters["committed"] == sum(len(line_index(src / f)) for f in
                                                                   s.committed_offsets())
    assert not list(offsets_dir.glob("*.tmp"))  # written atomically: no temp file left behind


def test_growing_files_and_partial_lines_are_read_as_they_complete(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    a = make_file(src, "a.txt", 50)
    stages = {"step": 0}
    partial_at = {}

    def check(cluster):
        want = sizes(src)
        if stages["step"] == 1:
            want["a.txt"] = partial_at["a"]  # everything but the partial line
        if committed(cluster) != want:
            return False
        stages["step"] += 1
        if stages["step"] == 1:  # grow a, add b, and leave a partial last line in a
            make_file(src, "a.txt", 30)
            make_file(src, "b.txt", 40)
            partial_at["a"] = a.stat().st_size
            with open(a, "a") as f:
                f.write(f"a.txt:{partial_at['a']:08d}:partial")
            return False
        if stages["step"] == 2:
            assert not [s for s in Collect.seen if s[:2] == ("a.txt", partial_at["a"])]  # not emitted
            with open(a, "a") as f:
                f.write("-completed\n")
            return False
        return True

    cluster = LocalCluster(pipeline(spout_parallelism=1), config(src))
    cluster.run(duration=30, until=lambda: check(cluster))
    assert stages["step"] == 3, (stages, committed(cluster), sizes(src))
    assert sorted(Collect.seen) == sorted(all_lines(src))
    assert ("a.txt", partial_at["a"], f"a.txt:{partial_at['a']:08d}:partial-completed") in Collect.seen


class HoldSome(Bolt):
    """Holds the tuples of chosen offsets of a.txt, acks the rest; acks held ones when told, in
    the order told (on tick tuples, so the acks come from the bolt's own thread)."""

    auto_ack = False
    hold: set[int] = set()
    release: list[int] = []
    held: dict[int, object] = {}

    @classmethod
    def component_config(cls):
        return {"topology.tick_interval": 0.01}

    def process(self, tup):
        if tup.is_tick:
            while HoldSome.release and HoldSome.release[0] in HoldSome.held:
                self.ack(HoldSome.held.pop(HoldSome.release.pop(0)))
            return
        where = tup.values[0]
        if where[0] == "a.txt" and where[1] in HoldSome.hold:
            HoldSome.held[where[1]] = tup
            return
        Collect.seen.append(where)
        self.ack(tup)


def test_out_of_order_acks_commit_only_the_contiguous_prefix(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    a = make_file(src, "a.txt", 100)
    offsets = sorted(line_index(a))
    first, second = offsets[10], offsets[60]
    HoldSome.hold, HoldSome.release, HoldSome.held = {first, second}, [], {}
    seen_offsets = []

    def until(cluster):
        [spout] = spouts(cluster)
        c = spout.committed_offsets().get("a.txt")
        on_disk = read_offsets(src / ".streamgale-offsets", TOPOLOGY_NAME, "files").get("a.txt")
        if len(HoldSome.held) == 2 and not HoldSome.release and len(Collect.seen) == 98:
            if not seen_offsets:
                seen_offsets.append(("both held", c, on_disk))
                HoldSome.release = [second]  # the later one first: nothing may move
            return False
        if seen_offsets and len(seen_offsets) == 1 and len(HoldSome.held) == 1 and not HoldSome.release:
            seen_offsets.append(("later acked", c, on_disk))
            HoldSome.release = [first]
            return False
        if len(seen_offsets) == 2 and not HoldSome.held and c == a.stat().st_size:
            seen_offsets.append(("all acked", c, on_disk))
            return on_disk == c
        return False

    t = Topology(TOPOLOGY_NAME)
    t.spout("files", DirectorySource)
    t.bolt("tag", Tag).shuffle("files")
    t.bolt("hold", HoldSome).shuffle("tag")
    cluster = LocalCluster(t, config(src))
    cluster.run(duration=30, until=lambda: until(cluster))
    assert [s[0] for s in seen_offsets] == ["both held", "later acked", "all acked"], seen_offsets
    assert seen_offsets[0][1:] == (first, first)  # the prefix ends where the first held line starts
    assert seen_offsets[1][1:] == (first, first)  # acking the later one alone changes nothing
    assert seen_offsets[2][1:] == (a.stat().st_size, a.stat().st_size)


class FailFirstTimes(Bolt):
    """Fails every 7th line the first two times it sees it (raises: the tuple is failed)."""

    attempts: dict[tuple[str, int], int] = {}

    def process(self, tup):
        where = tup.values[0]
        if where[1] % 7 == 0 or hash(where[1]) % 7 == 3:
            n = FailFirstTimes.attempts.get(where[:2], 0)
            FailFirstTimes.attempts[where[:2]] = n + 1
            if n < 2:
                raise RuntimeError(f"injected failure of {where[:2]}")
        Collect.seen.append(where)


class FastRetry(DirectorySource):
    retry_backoff = 0.01
    retry_backoff_max = 0.02


def test_failed_lines_are_replayed_until_they_succeed(tmp_path):
    FailFirstTimes.attempts = {}
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        make_file(src, f"f{i}.txt", 80)
    cluster = run(pipeline(source=FastRetry, bolt=FailFirstTimes), config(src), all_committed(src))
    assert sorted(Collect.seen) == sorted(all_lines(src))  # each once: failures were not recorded
    failing = [k for k, n in FailFirstTimes.attempts.items() if n == 3]
    assert failing and all(n == 3 for n in FailFirstTimes.attempts.values())
    assert sum(s.stats["retried"] for s in spouts(cluster)) == 2 * len(failing)
    assert read_offsets(src / ".streamgale-offsets", TOPOLOGY_NAME, "files") == sizes(src)


class AlwaysFailOne(Bolt):
    def process(self, tup):
        if tup.values[0][1] == 0 and tup.values[0][0] == "a.txt":
            raise RuntimeError("this line never succeeds")
        Collect.seen.append(tup.values[0])


class TwoRetries(FastRetry):
    max_retries = 2


def test_a_line_failing_past_max_retries_is_dead_lettered_and_committed(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    make_file(src, "a.txt", 20)
    cluster = run(pipeline(source=TwoRetries, bolt=AlwaysFailOne, spout_parallelism=1), config(src),
                  all_committed(src))
    assert sorted(Collect.seen) == sorted(x for x in all_lines(src) if x[1] != 0)
    [spout] = spouts(cluster)
    assert spout.stats["dead_lettered"] == 1 and spout.stats["retried"] == 2
    [record] = [json.loads(line) for line in spout.dead_letter_path.read_text().splitlines()]
    assert record["file"] == "a.txt" and record["offset"] == 0 and record["values"][0].startswith("a.txt:00000000:")


def test_a_restarted_run_resumes_without_rereading_acked_lines(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        make_file(src, f"f{i}.txt", 200)
    before = all_lines(src)
    # First run: stopped part-way (whatever is in flight then is not acked, so not committed).
    first = LocalCluster(pipeline(), config(src))
    first.run(duration=30, until=lambda: len(Collect.seen) >= 250)
    run1 = list(Collect.seen)
    assert 250 <= len(run1) < len(before)
    offsets = read_offsets(src / ".streamgale-offsets", TOPOLOGY_NAME, "files")
    done = {x for x in before if x[1] < offsets.get(x[0], 0)}
    assert done <= set(run1)  # committed implies processed
    # More data while it is down: one file grows, one is new.
    make_file(src, "f1.txt", 25)
    make_file(src, "new.txt", 30)
    Collect.seen = []
    run(pipeline(), config(src), all_committed(src))
    run2 = Collect.seen
    assert sorted(run2) == sorted(all_lines(src) - done)  # exactly what was not committed, once
    assert not set(run2) & done
    # A third run has nothing to read.
    Collect.seen = []
    third = LocalCluster(pipeline(), config(src))
    third.run(duration=0.5)
    assert Collect.seen == []


def test_a_changed_task_count_still_resumes_each_file(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        make_file(src, f"f{i}.txt", 40)
    run(pipeline(spout_parallelism=3), config(src), all_committed(src))
    ends = sizes(src)
    for i in range(6):
        make_file(src, f"f{i}.txt", 5)
    Collect.seen = []
    run(pipeline(spout_parallelism=2), config(src), all_committed(src))
    assert sorted(Collect.seen) == sorted(x for x in all_lines(src) if x[1] >= ends[x[0]])
    assert len(Collect.seen) == 30


def test_a_replaced_or_truncated_file_is_read_again_from_the_start(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    make_file(src, "a.txt", 30)
    make_file(src, "b.txt", 30)
    stages = {"step": 0}

    def until(cluster):
        if committed(cluster) != sizes(src):
            return False
        stages["step"] += 1
        if stages["step"] == 1:
            Collect.seen.clear()
            tmp = src / "a.txt.new"
            write_lines(tmp, numbered("a.txt", 0, 5), "w")
            os.replace(tmp, src / "a.txt")  # a new inode
            with open(src / "b.txt", "r+") as f:  # the same inode, shorter
                f.truncate(0)
            write_lines(src / "b.txt", numbered("b.txt", 0, 3))
            return False
        return True

    cluster = LocalCluster(pipeline(spout_parallelism=1), config(src))
    cluster.run(duration=30, until=lambda: until(cluster))
    assert stages["step"] == 2
    assert sorted(Collect.seen) == sorted(all_lines(src))
    [spout] = spouts(cluster)
    saved = json.loads(spout.offsets_path.read_text())["files"]
    assert saved["a.txt"]["generation"] == 1 and saved["b.txt"]["generation"] == 1
    assert saved["a.txt"]["inode"] == (src / "a.txt").stat().st_ino


# -- JSON ---------------------------------------------------------------------------------------


class Events(DirectorySource):
    outputs = ["user", "n"]


class CollectValues(Bolt):
    def process(self, tup):
        Collect.seen.append(tuple(tup.values))


def test_json_lines_take_the_declared_fields_and_malformed_lines_are_dead_lettered(tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    lines = ['{"user": "ann", "n": 1, "extra": true}', "{not json", '{"user": "bob"}', "", "[1, 2]",
             '{"n": 3, "user": "cy"}', '{"user": "dee", "n": 4']
    write_lines(src / "events.jsonl", lines, "w")
    t = Topology(TOPOLOGY_NAME)
    t.spout("files", Events)
    t.bolt("collect", CollectValues).shuffle("files")
    conf = config(src, **{"files.pattern": "*.jsonl", "files.format": "json"})
    with caplog.at_level("ERROR", logger="streamgale.connectors.files"):
        cluster = run(t, conf, all_committed(src, "*.jsonl"))
    assert sorted(Collect.seen) == [("ann", 1), ("bob", None), ("cy", 3)]
    [spout] = spouts(cluster)
    records = [json.loads(line) for line in spout.dead_letter_path.read_text().splitlines()]
    index = {line: off for off, line in line_index(src / "events.jsonl").items()}
    assert [(r["offset"], r["line"]) for r in records] == [(index["{not json"], "{not json"),
                                                          (index["[1, 2]"], "[1, 2]"),
                                                          (index['{"user": "dee", "n": 4'], '{"user": "dee", "n": 4')]
    assert records[0]["reason"].startswith("malformed JSON") and records[1]["reason"] == "not a JSON object but list"
    assert spout.stats["dead_lettered"] == 3
    assert any("events.jsonl at byte" in r.getMessage() and "dead-lettered" in r.getMessage()
               for r in caplog.records)
    assert read_offsets(src / ".streamgale-offsets", TOPOLOGY_NAME, "files") == sizes(src, "*.jsonl")
    assert not cluster.errors


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "config key 'files.dir' is required"),
    ({"files.dir": "/x", "files.format": "csv"}, "config key 'files.format' must be one of text, json, got 'csv'"),
    ({"files.dir": "/x", "files.poll_interval": "fast"}, "config key 'files.poll_interval' must be a number"),
    ({"files.dir": "/x", "files.pattern": "../*.txt"}, "config key 'files.pattern' must be a glob relative"),
])
def test_bad_settings_are_named(settings, message):
    from streamgale.connectors.files import SourceSettings

    with pytest.raises(ConfigError) as e:
        SourceSettings.from_config(settings)
    assert message in str(e.value)


def test_a_missing_directory_is_retried_until_it_appears(tmp_path):
    src = tmp_path / "later"
    stage = {"made": False}

    def until(cluster):
        [spout] = spouts(cluster)
        if not stage["made"] and spout.stats is not None and not spout._connected:
            src.mkdir()
            make_file(src, "a.txt", 10)
            stage["made"] = True
            return False
        return stage["made"] and committed(cluster) == sizes(src)

    cluster = LocalCluster(pipeline(spout_parallelism=1), config(src))
    cluster.run(duration=30, until=lambda: until(cluster))
    assert sorted(Collect.seen) == sorted(all_lines(src))


def test_text_format_needs_exactly_one_field(tmp_path):
    t = Topology(TOPOLOGY_NAME)
    t.spout("files", Events)
    t.bolt("collect", CollectValues).shuffle("files")
    with pytest.raises(StartFailed, match="open\\(\\) raised ConfigError: files.format 'text' emits one field, but "
                                          r"component 'files' declares \['user', 'n'\]"):
        LocalCluster(t, config(tmp_path)).run(duration=5)


# -- the sink -----------------------------------------------------------------------------------


def test_sink_rotates_and_holds_every_line(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        make_file(src, f"f{i}.txt", 150)
    t = Topology(TOPOLOGY_NAME)
    t.spout("files", DirectorySource, parallelism=2)
    t.bolt("sink", RotatingFileSink, parallelism=2).shuffle("files")
    conf = config(src, **{"files.sink.dir": str(out), "files.sink.max_bytes": 2000, "files.sink.prefix": "lines"})
    cluster = run(t, conf, all_committed(src))
    files = sorted(out.iterdir())
    assert files and all(p.stat().st_size <= 2000 for p in files)
    tasks = cluster.topology.task_ids()["sink"]
    for task in tasks:
        mine = sorted((p for p in files if p.name.startswith(f"lines-{task}-")),
                      key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        assert [p.name for p in mine] == [f"lines-{task}-{n}.txt" for n in range(len(mine))]
        assert len(mine) > 1  # it rotated
    written = [line for p in files for line in p.read_text().splitlines()]
    assert sorted(written) == sorted(line for _, _, line in all_lines(src))  # each exactly once


class Pairs(DirectorySource):
    outputs = ["user", "n"]


def test_json_sink_writes_the_fields_and_a_restart_appends(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_lines(src / "a.jsonl", [json.dumps({"user": f"u{i}", "n": i}) for i in range(30)], "w")
    t = Topology(TOPOLOGY_NAME)
    t.spout("files", Pairs)
    t.bolt("sink", RotatingFileSink).shuffle("files")
    conf = config(src, **{"files.pattern": "*.jsonl", "files.format": "json", "files.sink.dir": str(out),
                          "files.sink.format": "json"})
    run(t, conf, all_committed(src, "*.jsonl"))
    write_lines(src / "a.jsonl", [json.dumps({"user": f"u{i}", "n": i}) for i in range(30, 40)])
    run(t, conf, all_committed(src, "*.jsonl"))
    [path] = out.iterdir()
    assert path.name.endswith("-0.jsonl")  # appended to, not a new file
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(rows, key=lambda r: r["n"]) == [{"user": f"u{i}", "n": i} for i in range(40)]


class BrokenDisk(RotatingFileSink):
    """Its first two writes raise: the batch is failed, replayed, then written once."""

    failures = 0

    def write(self, tuples):
        if BrokenDisk.failures < 2:
            BrokenDisk.failures += 1
            raise OSError("disk full (injected)")
        super().write(tuples)


def test_sink_acks_only_what_it_wrote_and_a_failed_write_is_replayed(tmp_path):
    BrokenDisk.failures = 0
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    make_file(src, "a.txt", 50)
    t = Topology(TOPOLOGY_NAME)
    t.spout("files", FastRetry)
    t.bolt("sink", BrokenDisk).shuffle("files")
    BrokenDisk.reconnect_backoff = 0.01
    conf = config(src, **{"files.sink.dir": str(out)})
    cluster = run(t, conf, all_committed(src))
    assert BrokenDisk.failures == 2
    written = [line for p in out.iterdir() for line in p.read_text().splitlines()]
    assert sorted(written) == sorted(line for _, _, line in all_lines(src))
    assert sum(s.stats["retried"] for s in spouts(cluster)) > 0


def test_line_ids_are_what_the_docs_say():
    assert LineId("a.txt", 10) == ("a.txt", 10, 0)


# -- a real cluster ----------------------------------------------------------------------------

PIPELINE = str(ROOT / "tests" / "topologies" / "file_pipeline.py")


def seen_on_cluster(out: Path, pids: set[int] | None = None) -> list[tuple[str, int]]:
    found = []
    for f in out.glob("seen-*.txt"):
        pid = int(f.stem.rsplit("-", 1)[1])
        if pids is None or pid in pids:
            for line in f.read_text().splitlines():
                name, off = line.split("\t")[:2]
                found.append((name, int(off)))
    return found


def pids_of(out: Path) -> set[int]:
    return {int(f.stem.rsplit("-", 1)[1]) for f in out.glob("seen-*.txt")}


@pytest.mark.slow
def test_file_source_resumes_after_kill_and_resubmit_on_a_cluster(cluster, cluster_state, tmp_path):
    src, out, offsets_dir = tmp_path / "in", tmp_path / "out", tmp_path / "offsets"
    src.mkdir()
    for i in range(4):
        make_file(src, f"f{i}.txt", 3000)

    def submit():
        result = cluster.cli("submit", PIPELINE, "-c", f"files.dir={src}", "-c", f"files.offsets_dir={offsets_dir}",
                             "-c", f"test.output_dir={out}")
        assert result.returncode == 0, result.stderr + cluster.logs()

    def where(lines):
        return {(n, o) for n, o, _ in lines}

    submit()
    cluster.wait(lambda: len(seen_on_cluster(out)) >= 2000, timeout=120, message="2000 lines processed")
    for i in range(4):  # more while it runs
        make_file(src, f"f{i}.txt", 500)
    killed = cluster.cli("kill", "file-pipeline", "-w", "2")
    assert killed.returncode == 0, killed.stderr
    cluster.wait(lambda: not cluster_state.assignments() and not cluster.worker_processes(), timeout=90,
                 message="the topology and its workers gone")
    first_pids = pids_of(out)
    run1 = seen_on_cluster(out)
    committed1 = read_offsets(offsets_dir, "file-pipeline", "files")
    acked = {x for x in where(all_lines(src)) if x[1] < committed1.get(x[0], 0)}
    assert acked and acked <= set(run1)  # committed implies processed
    for i in range(2, 6):  # more while it is down: two files grow, two are new
        make_file(src, f"f{i}.txt", 400)
    everything = where(all_lines(src))
    submit()
    cluster.wait(lambda: read_offsets(offsets_dir, "file-pipeline", "files") == sizes(src), timeout=120,
                 message="every line committed after the resubmit")
    run2 = seen_on_cluster(out, pids_of(out) - first_pids)
    assert not set(run2) & acked  # no acked line read again
    assert set(run1) | set(run2) == everything  # no line lost
    assert sorted(set(run2)) == sorted(everything - acked)
    print(f"\nFILES resume: {len(acked)} lines committed before the kill, {len(run2)} processed after, "
          f"{len(set(run1) & set(run2))} processed twice (in flight at the kill)")
    cluster.cli("kill", "file-pipeline", "-w", "0")
