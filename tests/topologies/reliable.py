"""Topologies for the cluster reliability tests; results go to files under test.output_dir.

- ``random-fail``: ReliableSpout of test.total numbers -> fanout (3 per number,
  shuffle) -> a bolt failing test.fail_rate of its inputs (fields grouping).
  The spout logs "ack N" / "fail N" lines; the bolt logs "fail N" lines.
- ``slow``: a spout emitting as fast as it may (acked) into a bolt that takes
  test.slow_ms per tuple. Each logs a progress line every 0.5 s.
"""

import os
import random
import time
from pathlib import Path

from streamgale import Bolt, ReliableSpout, Topology


def out_file(context, kind):
    out = Path(context.config["test.output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    return open(out / f"{kind}-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)


class Numbers(ReliableSpout):
    outputs = ["n"]

    def open(self, context):
        self.next = context.task_index
        self.step = context.task_count
        self.total = int(context.config["test.total"])
        self.log = out_file(context, "spout")

    def next_message(self):
        if self.next >= self.total:
            return None
        n, self.next = self.next, self.next + self.step
        return n, [n]

    def on_acked(self, msg_id, values):
        self.log.write(f"ack {msg_id}\n")

    def fail(self, msg_id):
        self.log.write(f"fail {msg_id}\n")
        super().fail(msg_id)


class Fanout(Bolt):
    outputs = ["n", "k"]

    def process(self, tup):
        for k in range(3):
            self.emit([tup["n"], k])


class RandomFail(Bolt):
    auto_ack = False

    def prepare(self, context):
        self.rng = random.Random(context.task_id)
        self.rate = float(context.config["test.fail_rate"])
        self.log = out_file(context, "failer")

    def process(self, tup):
        if self.rng.random() < self.rate:
            self.log.write(f"fail {tup['n']}\n")
            self.fail(tup)
        else:
            self.ack(tup)


class Fast(ReliableSpout):
    outputs = ["n"]
    max_retries = 0

    def open(self, context):
        self.n = 0
        self.log = out_file(context, "fast")
        self.next_log = 0.0

    def next_message(self):
        now = time.monotonic()
        if now >= self.next_log:
            self.next_log = now + 0.5
            self.log.write(f"{time.time()} {self.n} {self.acked} {self.failed} {self.pending_count}\n")
        self.n += 1
        return self.n, [self.n]


class Slow(Bolt):
    def prepare(self, context):
        self.delay = float(context.config["test.slow_ms"]) / 1000
        self.log = out_file(context, "slow")
        self.done = 0
        self.next_log = 0.0

    def process(self, tup):
        time.sleep(self.delay)  # a slow external call
        self.done += 1
        now = time.monotonic()
        if now >= self.next_log:
            self.next_log = now + 0.5
            self.log.write(f"{time.time()} {self.done}\n")


def build_topology(config):
    mode = config.get("test.mode", "random-fail")
    t = Topology(mode, config={"topology.workers": 2})
    if mode == "random-fail":
        t.spout("numbers", Numbers, parallelism=2)
        t.bolt("fanout", Fanout, parallelism=2).shuffle("numbers")
        t.bolt("failer", RandomFail, parallelism=2).fields("fanout", "k")
    else:
        t.spout("fast", Fast)
        t.bolt("slow", Slow).shuffle("fast")
    return t
