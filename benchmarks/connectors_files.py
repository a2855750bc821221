"""The file source's throughput against a raw Python loop: ``python -m benchmarks.connectors_files``.

The same files (``--files`` files of ``--lines`` lines each, in a temporary directory)
are read, interleaved ``--runs`` times in one run:

- **raw**: a Python loop reading each file in binary and splitting it into lines
  (what any reader of the files must at least do);
- **source**: a :class:`~streamgale.connectors.files.DirectorySource` in local mode,
  acked (every line a tracked tuple into a bolt that does nothing), until every
  offset is committed; its offsets directory is emptied before each run.

Prints lines per second of each (median of the runs) and the ratio source / raw.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from streamgale import Bolt, Config, LocalCluster, Topology
from streamgale.connectors.files import DirectorySource


class Drop(Bolt):
    def process(self, tup):
        pass


def make_files(directory: Path, files: int, lines: int) -> int:
    for i in range(files):
        with open(directory / f"part-{i}.txt", "w") as f:
            f.write("".join(f"{i} {n} the quick brown fox jumps over the lazy dog\n" for n in range(lines)))
    return files * lines


def raw(directory: Path) -> int:
    count = 0
    for path in sorted(directory.glob("*.txt")):
        with open(path, "rb") as f:
            for _ in f.read().split(b"\n")[:-1]:
                count += 1
    return count


def source(directory: Path, parallelism: int) -> int:
    shutil.rmtree(directory / ".streamgale-offsets", ignore_errors=True)
    t = Topology("bench-files")
    t.spout("files", DirectorySource, parallelism=parallelism)
    t.bolt("drop", Drop).shuffle("files")
    config = Config().merged({"files.dir": str(directory), "files.pattern": "*.txt",
                              "topology.max_spout_pending": 5000}, "benchmark")
    sizes = {p.name: p.stat().st_size for p in directory.glob("*.txt")}
    cluster = LocalCluster(t, config)
    spouts = [r.instance for e in cluster.loop.spouts for r in e.runners if isinstance(r.instance, DirectorySource)]

    def done() -> bool:
        committed: dict[str, int] = {}
        for s in spouts:
            committed.update(s.committed_offsets())
        return committed == sizes

    cluster.run(duration=600, until=done)
    assert done(), "the source did not commit every line"
    return sum(s.stats["committed"] for s in spouts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sg-bench-files-") as tmp:
        directory = Path(tmp)
        total = make_files(directory, args.files, args.lines)
        rates: dict[str, list[float]] = {"raw": [], "source": []}
        for _ in range(args.runs):
            for name, fn in (("raw", lambda: raw(directory)), ("source", lambda: source(directory, args.parallelism))):
                start = time.perf_counter()
                n = fn()
                elapsed = time.perf_counter() - start
                assert n == total, (name, n, total)
                rates[name].append(n / elapsed)
        raw_rate, source_rate = statistics.median(rates["raw"]), statistics.median(rates["source"])
        print(f"{total} lines in {args.files} files, {args.runs} runs (median)")
        print(f"raw Python loop:  {raw_rate:12,.0f} lines/s")
        print(f"DirectorySource:  {source_rate:12,.0f} lines/s (acked, offsets committed)")
        print(f"ratio source/raw: {source_rate / raw_rate:.4f}")


if __name__ == "__main__":
    main()
