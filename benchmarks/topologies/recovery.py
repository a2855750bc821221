"""A reliable topology at a steady rate, for measuring recovery from a killed worker.

numbers (2 tasks, paced, message ids) -> work (4, shuffle) -> done (2, fields).

User config keys: bench.output_dir, bench.rate (messages per second over all
spout tasks). Files (suffix ``<task>-<pid>``, line-buffered, so a kill -9 loses
at most a partial line):

- ``work-*.txt``: "<time.time()> <task> <pid> <msg id>" per tuple the work bolt processes;
- ``acks-*.txt``: "<time.time()> <msg id>" per message acked at the spout.

Message ids are "<spout task>-<pid>-<n>", unique across a spout task's restarts.
"""

import os
import time
from pathlib import Path

from streamgale import Bolt, Spout, Topology


def log_file(context, kind):
    out = Path(context.config["bench.output_dir"])
    return open(out / f"{kind}-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)


class Numbers(Spout):
    outputs = ["id"]

    def open(self, context):
        self.interval = context.task_count / float(context.config["bench.rate"])
        self.prefix = f"{context.task_id}-{os.getpid()}-"
        self.n = 0
        self.next_at = time.monotonic()
        self.log = log_file(context, "acks")

    def next_tuple(self):
        now = time.monotonic()
        if now < self.next_at:
            return  # ahead of schedule
        self.next_at = max(self.next_at + self.interval, now - 0.1)
        msg_id = f"{self.prefix}{self.n}"
        self.n += 1
        self.emit([msg_id], msg_id=msg_id)

    def ack(self, msg_id):
        self.log.write(f"{time.time()!r} {msg_id}\n")


class Work(Bolt):
    outputs = ["id"]

    def prepare(self, context):
        self.log = log_file(context, "work")
        self.tag = f"{context.task_id} {os.getpid()}"

    def process(self, tup):
        self.log.write(f"{time.time()!r} {self.tag} {tup.values[0]}\n")
        self.emit([tup.values[0]])


class Done(Bolt):
    def process(self, tup):
        pass


def build_topology(config):
    t = Topology("bench-recovery", config={"topology.workers": 2})
    t.spout("numbers", Numbers, parallelism=2)
    t.bolt("work", Work, parallelism=4).shuffle("numbers")
    t.bolt("done", Done, parallelism=2).fields("work", "id")
    return t
