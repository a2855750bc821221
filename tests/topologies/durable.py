"""A reliable topology over a durable source, for fault injection.

The spout's source is the numbers 0..test.total-1 (task i takes every n-th),
emitted at test.rate per second per task. Its "commit log" is the ack files
under test.output_dir: a (re)started spout task skips what was acked before and
replays everything else, like a queue consumer resuming from committed offsets.
The "work" bolt (fields grouping) records "time task pid n" per tuple processed.
"""

import os
import time
from pathlib import Path

from streamgale import Bolt, ReliableSpout, Topology


class Numbers(ReliableSpout):
    outputs = ["n"]

    def open(self, context):
        out = Path(context.config["test.output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        done = set()
        for f in out.glob(f"acks-{context.task_id}-*.txt"):
            done.update(int(line) for line in f.read_text().split())
        total = int(context.config["test.total"])
        self.todo = [n for n in range(context.task_index, total, context.task_count) if n not in done]
        self.todo.reverse()
        self.rate = float(context.config["test.rate"])
        self.started = time.monotonic()
        self.sent = 0
        self.log = open(out / f"acks-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)

    def next_message(self):
        if not self.todo or self.sent > (time.monotonic() - self.started) * self.rate:
            return None
        self.sent += 1
        n = self.todo.pop()
        return n, [n]

    def on_acked(self, msg_id, values):
        self.log.write(f"{msg_id}\n")


class Work(Bolt):
    outputs = ["n"]

    def prepare(self, context):
        out = Path(context.config["test.output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / f"work-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)
        self.task = context.task_id
        self.pid = os.getpid()

    def process(self, tup):
        self.log.write(f"{time.time()} {self.task} {self.pid} {tup['n']}\n")
        self.emit([tup["n"]])


class Done(Bolt):
    def process(self, tup):
        pass


topology = Topology("durable", config={"topology.workers": 4, "topology.message_timeout": 10})
topology.spout("numbers", Numbers, parallelism=2)
topology.bolt("work", Work, parallelism=4).fields("numbers", "n")
topology.bolt("done", Done, parallelism=2).shuffle("work")
