"""Word count, Storm's classic: sentences -> split -> count -> report.

Run it:  streamgale local examples/word_count.py
It prints the ten most frequent words every two seconds while they change.
"""

import random
from collections import Counter

from streamgale import Bolt, Spout, Topology

SENTENCES = [
    "the cow jumped over the moon",
    "an apple a day keeps the doctor away",
    "four score and seven years ago",
    "snow white and the seven dwarfs",
    "i am at two with nature",
]


class RandomSentence(Spout):
    """An endless stream of sentences, each emitted with a message id."""

    outputs = ["sentence"]

    def open(self, context):
        self.rng = random.Random(context.task_id)
        self.next_id = 0

    def next_tuple(self):
        self.next_id += 1
        self.emit([self.rng.choice(SENTENCES)], msg_id=self.next_id)


class Split(Bolt):
    outputs = ["word"]

    def process(self, tup):
        for word in tup["sentence"].split():
            self.emit([word])


class Count(Bolt):
    """Running count per word; fields grouping sends each word to one task."""

    outputs = ["word", "count"]

    def prepare(self, context):
        self.counts = Counter()

    def process(self, tup):
        word = tup["word"]
        self.counts[word] += 1
        self.emit([word, self.counts[word]])


class Report(Bolt):
    """Keeps the latest count of every word; prints the top ten on each tick."""

    def prepare(self, context):
        self.latest = {}
        self.shown = None
        self.top_n = context.config.get("wordcount.top_n", 10)

    def process(self, tup):
        if tup.is_tick:
            top = sorted(self.latest.items(), key=lambda kv: (-kv[1], kv[0]))[: self.top_n]
            if top and top != self.shown:
                print("top words: " + ", ".join(f"{w}={c}" for w, c in top), flush=True)
                self.shown = top
            return
        self.latest[tup["word"]] = tup["count"]


topology = Topology("word-count")
topology.spout("sentences", RandomSentence, parallelism=2)
topology.bolt("split", Split, parallelism=4).shuffle("sentences")
topology.bolt("count", Count, parallelism=4).fields("split", "word")
topology.bolt("report", Report, config={"topology.tick_interval": 2}).global_("count")
