"""Word count for the cluster benchmark: a fixed set of sentences, progress in files.

User config keys: bench.sentences (total, split over the spout tasks),
bench.output_dir (where progress files go), bench.acked (emit with message
ids, so every sentence's tuple tree is tracked by the ackers; a failed sentence
is sent again), bench.spouts (the spout's parallelism, default 2), bench.stateful
(count is a StatefulBolt: its counts checkpointed, docs/state.md; needs acked). Each count task rewrites
``count-<task>.txt`` as "<words counted> <time.time() of the last one>" on
every tick, so the benchmark can tell when all words are counted and when.
"""

import os
import random
import time
from collections import Counter
from pathlib import Path

from streamgale import Bolt, Spout, StatefulBolt, Topology

VOCABULARY = [f"word{i}" for i in range(1000)]


class Sentences(Spout):
    outputs = ["sentence"]

    def open(self, context):
        total = int(context.config["bench.sentences"])
        rng = random.Random(42 + context.task_index)
        mine = len(range(context.task_index, total, context.task_count))
        self.sentences = [" ".join(rng.choices(VOCABULARY, k=10)) for _ in range(mine)]
        self.next = 0
        self.out = Path(context.config["bench.output_dir"])
        self.task = context.task_id
        self.acked = bool(context.config.get("bench.acked", False))
        self.retry = []

    def fail(self, msg_id):
        self.retry.append(msg_id)

    def next_tuple(self):
        if self.next == 0 and self.sentences:
            (self.out / f"start-{self.task}.txt").write_text(repr(time.time()))
        emit, sentences = self.emit, self.sentences
        while self.retry:
            i = self.retry.pop()
            emit([sentences[i]], msg_id=i)
        end = min(self.next + 100, len(sentences))
        if self.acked:
            for i in range(self.next, end):
                emit([sentences[i]], msg_id=i)
        else:
            for i in range(self.next, end):
                emit([sentences[i]])
        self.next = end


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
        self.total = 0
        self.last = 0.0
        self.file = Path(context.config["bench.output_dir"]) / f"count-{context.task_id}.txt"

    def process(self, tup):
        if tup.is_tick:
            tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(f"{self.total} {self.last!r}")
            os.replace(tmp, self.file)
            return
        word = tup.values[0]
        counts = self.counts
        counts[word] += 1
        self.total += 1
        self.last = time.time()
        self.emit([word, counts[word]])


class StatefulCount(StatefulBolt):
    """Count with its counts in checkpointed state; progress is the state's own total, so a
    rolled-back word is not counted twice."""

    outputs = ["word", "count"]

    def prepare(self, context):
        self.last = 0.0
        self.file = Path(context.config["bench.output_dir"]) / f"count-{context.task_id}.txt"

    def process(self, tup):
        state = self.state
        if tup.is_tick:
            tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(f"{state.get('__total', 0)} {self.last!r}")
            os.replace(tmp, self.file)
            return
        word = tup.values[0]
        n = state.get(word, 0) + 1
        state[word] = n
        state["__total"] = state.get("__total", 0) + 1
        self.last = time.time()
        self.emit([word, n])


def build_topology(config):
    t = Topology("bench-cluster-wc", config={"topology.workers": 2})
    t.spout("sentences", Sentences, parallelism=int(config.get("bench.spouts", 2)))
    t.bolt("split", Split, parallelism=4).shuffle("sentences")
    count = StatefulCount if config.get("bench.stateful") else Count
    t.bolt("count", count, parallelism=4, config={"topology.tick_interval": 0.1}).fields("split", "word")
    return t
