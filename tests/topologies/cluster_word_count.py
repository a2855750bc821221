"""Word count for cluster tests: a fixed set of sentences, counts written to files.

Config (user keys): test.output_dir (where sink files go), test.sentences (how
many sentences each run emits in total), test.rate (sentences per second per
spout task; 0 = as fast as possible).
"""

import itertools
import os
import time
from collections import Counter
from pathlib import Path

from streamgale import Bolt, Spout, Topology

WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "honeydew", "kiwi", "lemon",
         "mango", "nectarine", "orange", "papaya", "quince"]


def sentence(i):
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(1 + i % 6))


def expected_counts(n):
    return Counter(w for i in range(n) for w in sentence(i).split())


class Sentences(Spout):
    outputs = ["sentence"]

    def open(self, context):
        self.total = int(context.config.get("test.sentences", 1000))
        self.rate = float(context.config.get("test.rate", 0))
        self.mine = list(range(context.task_index, self.total, context.task_count))
        self.next = 0
        self.started = time.monotonic()

    def exhausted(self):
        return self.next >= len(self.mine)

    def next_tuple(self):
        if self.next >= len(self.mine):
            return
        if self.rate and self.next > (time.monotonic() - self.started) * self.rate:
            return
        self.emit([sentence(self.mine[self.next])], msg_id=self.mine[self.next])
        self.next += 1


class Split(Bolt):
    outputs = ["word"]

    def process(self, tup):
        for w in tup["sentence"].split():
            self.emit([w])


INSTANCES = itertools.count(1)


class Count(Bolt):
    """Emits (word, its count, task, instance): the instance is pid * 1000 + n, n counting the
    Count instances this process made, so a task's counts can be told apart per instance (a
    rebalance may start a new one in the same worker)."""

    outputs = ["word", "count", "task", "pid"]

    def prepare(self, context):
        self.counts = Counter()
        self.task = context.task_id
        self.instance = os.getpid() * 1000 + next(INSTANCES)

    def process(self, tup):
        w = tup["word"]
        self.counts[w] += 1
        self.emit([w, self.counts[w], self.task, self.instance])


class FileSink(Bolt):
    """Appends 'word count count-task count-instance sink-pid' lines to a file per sink task."""

    def prepare(self, context):
        out = Path(context.config["test.output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / f"sink-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)

    def process(self, tup):
        self.file.write(f"{tup['word']} {tup['count']} {tup['task']} {tup['pid']} {os.getpid()}\n")

    def cleanup(self):
        self.file.close()


topology = Topology("cluster-wc", config={"topology.workers": 2})
topology.spout("sentences", Sentences, parallelism=2)
topology.bolt("split", Split, parallelism=2).shuffle("sentences")
topology.bolt("count", Count, parallelism=2, tasks=4).fields("split", "word")
topology.bolt("sink", FileSink, parallelism=2).shuffle("count")
