"""Benchmarks that print a table. Run: `python -m benchmarks [--sentences N] [--runs K]`.

local-word-count: Storm's word count (sentences -> split -> count, fields
grouping, every word emits its running count) over N sentences of 10 words
from a fixed seed, in local mode, parallelism 4/4. Reports words per second
(median, min, max over the runs).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter

from streamgale import Bolt, Topology
from streamgale.testing import FixedTupleSpout, complete_topology

VOCABULARY = [f"word{i}" for i in range(1000)]


def sentences(n: int, seed: int = 42) -> list[list[str]]:
    rng = random.Random(seed)
    return [[" ".join(rng.choices(VOCABULARY, k=10))] for _ in range(n)]


class Split(Bolt):
    outputs = ["word"]

    def process(self, tup):
        emit = self.emit
        for word in tup.values[0].split():
            emit([word])


class Count(Bolt):
    outputs = ["word", "count"]

    def prepare(self, context):
        self.counts = Counter()

    def process(self, tup):
        word = tup.values[0]
        counts = self.counts
        counts[word] += 1
        self.emit([word, counts[word]])


def word_count_topology(parallelism: int = 4) -> Topology:
    t = Topology("bench-word-count")
    t.spout("sentences", FixedTupleSpout([], ["sentence"]))
    t.bolt("split", Split, parallelism=parallelism).shuffle("sentences")
    t.bolt("count", Count, parallelism=parallelism).fields("split", "word")
    return t


def local_word_count(data: list[list[str]]) -> float:
    start = time.perf_counter()
    result = complete_topology(word_count_topology(), mock_sources={"sentences": data}, timeout=600)
    elapsed = time.perf_counter() - start
    words = len(result.emitted("split"))
    assert words == 10 * len(data)
    return words / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--sentences", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    data = sentences(args.sentences)
    rates = [local_word_count(data) for _ in range(args.runs)]
    print(f"{'scenario':<22} {'words/s (median)':>17} {'min':>10} {'max':>10}")
    print(f"{'local-word-count':<22} {statistics.median(rates):>17,.0f} {min(rates):>10,.0f} {max(rates):>10,.0f}")


if __name__ == "__main__":
    main()
