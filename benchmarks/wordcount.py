"""Storm's word count in local mode, and the benchmark's input data.

N sentences of 10 words from a fixed seed (vocabulary ``word0..word999``):
sentences -> split (shuffle) -> count (fields grouping), every word emits its
running count; parallelism 4/4.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from streamgale import Bolt, Config, LocalCluster, Topology
from streamgale.testing import FixedTupleSpout

from .topologies.cluster_word_count import VOCABULARY, Split


def sentences(n: int, seed: int = 42) -> list[list[str]]:
    rng = random.Random(seed)
    return [[" ".join(rng.choices(VOCABULARY, k=10))] for _ in range(n)]


class Count(Bolt):
    outputs = ["word", "count"]
    tasks: list[Count] = []  # every task of this process (local mode only), to sum their totals

    def prepare(self, context):
        self.counts = Counter()
        self.total = 0
        Count.tasks.append(self)

    def process(self, tup):
        word = tup.values[0]
        counts = self.counts
        counts[word] += 1
        self.total += 1
        self.emit([word, counts[word]])


def counted() -> int:
    return sum(task.total for task in Count.tasks)


def word_count_topology(data: list[list[str]], parallelism: int = 4) -> Topology:
    t = Topology("bench-word-count")
    t.spout("sentences", FixedTupleSpout(data, ["sentence"]))  # emits with message ids
    t.bolt("split", Split, parallelism=parallelism).shuffle("sentences")
    t.bolt("count", Count, parallelism=parallelism).fields("split", "word")
    return t


def local_word_count(data: list[list[str]], acked: bool = False, profiler: Any = None) -> float:
    """Words per second in local mode (one process), first emit to last word counted;
    ``profiler`` (a ``cProfile.Profile``), if given, is enabled around the run only."""
    words = 10 * len(data)
    config = Config().merged({"topology.acker_executors": None if acked else 0}, "benchmark")
    cluster = LocalCluster(word_count_topology(data), config)
    Count.tasks = []
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        result = cluster.run(duration=600, until=lambda: counted() >= words)
    finally:
        if profiler is not None:
            profiler.disable()
    elapsed = time.perf_counter() - start
    if counted() != words or result.errors:
        raise RuntimeError(f"local word count counted {counted()} of {words} words; errors: {result.errors}")
    return words / elapsed
