"""Benchmarks that print a table. Run: `python -m benchmarks [--sentences N] [--runs K] [--scenarios ...]`.

Storm's word count (sentences -> split -> count, fields grouping, every word
emits its running count) over N sentences of 10 words from a fixed seed,
parallelism 4/4, reported as words per second (median, min, max over the runs)
and as a ratio to local mode measured in the same run:

- local: in this process (``LocalCluster``), unacked; local-acked: acked;
- cluster-Nw: on a real cluster on this machine (ZooKeeper, nimbus, 2
  supervisors started through the CLI), with N worker processes, unacked;
- cluster-Nw-acked: the same with every sentence emitted with a message id,
  so each tuple tree is tracked by the ackers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter

from streamgale import Bolt, Config, LocalCluster, Topology
from streamgale.testing import FixedTupleSpout

from .topologies.cluster_word_count import VOCABULARY, Split



def sentences(n: int, seed: int = 42) -> list[list[str]]:
    rng = random.Random(seed)
    return [[" ".join(rng.choices(VOCABULARY, k=10))] for _ in range(n)]


class Count(Bolt):
    outputs = ["word", "count"]
    counted = 0  # words counted by every task of this process (local mode only)

    def prepare(self, context):
        self.counts = Counter()

    def process(self, tup):
        word = tup.values[0]
        counts = self.counts
        counts[word] += 1
        type(self).counted += 1
        self.emit([word, counts[word]])


def word_count_topology(data: list[list[str]], parallelism: int = 4) -> Topology:
    t = Topology("bench-word-count")
    t.spout("sentences", FixedTupleSpout(data, ["sentence"]))  # emits with message ids
    t.bolt("split", Split, parallelism=parallelism).shuffle("sentences")
    t.bolt("count", Count, parallelism=parallelism).fields("split", "word")
    return t


def local_word_count(data: list[list[str]], acked: bool = False) -> float:
    """Words per second in local mode (one process), first emit to last word counted."""
    words = 10 * len(data)
    config = Config().merged({"topology.acker_executors": None if acked else 0}, "benchmark")
    cluster = LocalCluster(word_count_topology(data), config)
    Count.counted = 0
    start = time.perf_counter()
    result = cluster.run(duration=600, until=lambda: Count.counted >= words)
    elapsed = time.perf_counter() - start
    if Count.counted != words or result.errors:
        raise RuntimeError(f"local word count counted {Count.counted} of {words} words; errors: {result.errors}")
    return words / elapsed


SCENARIOS = ("local", "cluster-1w", "cluster-2w", "cluster-4w",
             "cluster-1w-acked", "cluster-2w-acked", "cluster-4w-acked")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--sentences", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenarios", default="local,cluster-2w",
                    help=f"comma-separated, from: {', '.join(SCENARIOS)} (local always runs: the reference)")
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    data = sentences(args.sentences)
    results: dict[str, list[float]] = {"local": []}
    cluster_runs = [s for s in chosen if s.startswith("cluster-")]
    if cluster_runs:
        from .cluster import BenchCluster, cluster_word_count

        with BenchCluster(supervisors=2, slots=2) as cluster:
            for _ in range(args.runs):  # interleaved, so load changes hit every scenario alike
                results["local"].append(local_word_count(data))
                for name in cluster_runs:
                    workers = int(name.split("-")[1].rstrip("w"))
                    rate = cluster_word_count(cluster, args.sentences, workers, acked=name.endswith("-acked"))
                    results.setdefault(name, []).append(rate)
    else:
        results["local"] = [local_word_count(data) for _ in range(args.runs)]
    reference = statistics.median(results["local"])
    print(f"word count, {args.sentences:,} sentences x 10 words, {args.runs} runs")
    print(f"{'scenario':<18} {'words/s (median)':>17} {'min':>10} {'max':>10} {'vs local':>9}")
    for name, rates in results.items():
        median = statistics.median(rates)
        print(f"{name:<18} {median:>17,.0f} {min(rates):>10,.0f} {max(rates):>10,.0f} {median / reference:>8.2f}x")


if __name__ == "__main__":
    main()
