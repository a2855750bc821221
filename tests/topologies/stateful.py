"""A stateful word count over a durable source, for the state tests on a real cluster.

The spout's source is sentences 0..test.total-1 (``sentence(n)``), emitted at
test.rate per second; like a queue consumer resuming from committed offsets, a
(re)started spout skips what its ack files under test.output_dir record. Split
(shuffle) -> count (fields grouping, a StatefulBolt: one committed count per
word). The truth for N sentences is ``expected_counts(N)``.
"""

import os
import time
from collections import Counter
from pathlib import Path

from streamgale import Bolt, ReliableSpout, Topology
from streamgale.state import StatefulBolt

WORDS = [f"w{i}" for i in range(50)]


def sentence(n):
    return " ".join(WORDS[(n * k + k * k) % len(WORDS)] for k in range(1, 6))


def expected_counts(total):
    return Counter(w for n in range(total) for w in sentence(n).split())


class Sentences(ReliableSpout):
    outputs = ["sentence"]

    def open(self, context):
        out = Path(context.config["test.output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        done = set()
        for f in out.glob("acks-*.txt"):
            done.update(int(line) for line in f.read_text().split())
        self.todo = [n for n in range(int(context.config["test.total"])) if n not in done]
        self.todo.reverse()
        self.rate = float(context.config["test.rate"])
        self.started = time.monotonic()
        self.sent = 0
        self.log = open(out / f"acks-{os.getpid()}.txt", "a", buffering=1)

    def next_message(self):
        if not self.todo or self.sent > (time.monotonic() - self.started) * self.rate:
            return None
        self.sent += 1
        n = self.todo.pop()
        return n, [sentence(n)]

    def on_acked(self, msg_id, values):
        self.log.write(f"{msg_id}\n")


class Split(Bolt):
    outputs = ["word"]

    def process(self, tup):
        for word in tup.values[0].split():
            self.emit([word])


class Count(StatefulBolt):
    outputs = ["word", "count"]

    def process(self, tup):
        word = tup.values[0]
        n = self.state.get(word, 0) + 1
        self.state[word] = n
        self.emit([word, n])


# The message timeout leaves room for a lost node: its session timeout, the reassignment, a worker
# start and a retried COMMIT (every topology.state.checkpoint_timeout, 5 s) before held inputs expire.
topology = Topology("stateful-wc", config={"topology.workers": 3, "topology.message_timeout": 40,
                                          "topology.state.checkpoint_interval": 0.5})
topology.spout("sentences", Sentences)
topology.bolt("split", Split, parallelism=2).shuffle("sentences")
topology.bolt("count", Count, parallelism=4).fields("split", "word")
