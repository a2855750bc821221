"""Rolling top words: Storm's classic sliding-window top-N with tick tuples.

words -> rolling counts (a sliding window of slots advanced by ticks)
      -> intermediate rankings (per task) -> total ranking (one task).

Run it:  streamgale local examples/rolling_top_words.py
Settings (topology config, override with -c):
  rolling.window_seconds  length of the sliding window (default 9)
  rolling.emit_seconds    how often counts advance and rankings are emitted (default 3)
  rolling.top_n           size of the ranking (default 5)
"""

import random

from streamgale import Bolt, Spout, Topology

WORDS = ["nathan", "mike", "jackson", "golda", "bertels", "storm", "gale", "stream"]


class RandomWord(Spout):
    outputs = ["word"]

    def open(self, context):
        self.rng = random.Random(context.task_id)
        # Skewed on purpose so a ranking emerges.
        self.weights = [2 ** i for i in range(len(WORDS))]

    def next_tuple(self):
        self.emit([self.rng.choices(WORDS, self.weights)[0]])


class SlidingWindowCounter:
    """Counts per object over ``slots`` slots; ``advance`` drops the oldest slot."""

    def __init__(self, slots):
        self.slots = slots
        self.counts = {}
        self.head = 0

    def increment(self, obj):
        self.counts.setdefault(obj, [0] * self.slots)[self.head] += 1

    def totals_then_advance(self):
        totals = {obj: sum(c) for obj, c in self.counts.items()}
        self.head = (self.head + 1) % self.slots
        for obj in list(self.counts):
            self.counts[obj][self.head] = 0
            if not any(self.counts[obj]):
                del self.counts[obj]
        return totals


class RollingCount(Bolt):
    """On each tick, emits (word, count over the window) for every word seen in it."""

    outputs = ["obj", "count"]

    def prepare(self, context):
        window = context.config.get("rolling.window_seconds", 9)
        emit = context.config["topology.tick_interval"]
        self.counter = SlidingWindowCounter(max(1, round(window / emit)))

    def process(self, tup):
        if tup.is_tick:
            for obj, count in self.counter.totals_then_advance().items():
                self.emit([obj, count])
        else:
            self.counter.increment(tup["word"])


def merge_ranking(ranking, updates, top_n):
    """Replace entries by object, keep the ``top_n`` highest counts (ties by name)."""
    merged = dict(ranking)
    merged.update(updates)
    return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]


class IntermediateRanker(Bolt):
    outputs = ["rankings"]

    def prepare(self, context):
        self.top_n = context.config.get("rolling.top_n", 5)
        self.ranking = []

    def process(self, tup):
        if tup.is_tick:
            self.emit([[list(r) for r in self.ranking]])
        else:
            self.ranking = merge_ranking(self.ranking, {tup["obj"]: tup["count"]}, self.top_n)


class TotalRanker(Bolt):
    outputs = ["rankings"]

    def prepare(self, context):
        self.top_n = context.config.get("rolling.top_n", 5)
        self.ranking = []

    def process(self, tup):
        if tup.is_tick:
            if self.ranking:
                print("top: " + ", ".join(f"{o}={c}" for o, c in self.ranking), flush=True)
                self.emit([[list(r) for r in self.ranking]])
        else:
            self.ranking = merge_ranking(self.ranking, dict(tup["rankings"]), self.top_n)


def build_topology(config):
    emit_every = config.get("rolling.emit_seconds", 3)
    topology = Topology("rolling-top-words")
    topology.spout("words", RandomWord, parallelism=2)
    topology.bolt("counter", RollingCount, parallelism=4,
                  config={"topology.tick_interval": emit_every}).fields("words", "word")
    topology.bolt("intermediate", IntermediateRanker, parallelism=4,
                  config={"topology.tick_interval": emit_every}).fields("counter", "obj")
    topology.bolt("total", TotalRanker,
                  config={"topology.tick_interval": emit_every}).global_("intermediate")
    return topology
