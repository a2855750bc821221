"""Topologies for the memory benchmarks (2 workers); results go to files under bench.output_dir.

- bench.mode=idle: a spout that never emits (2 tasks) -> a bolt (2 tasks). Every
  task writes ``ready-<task>-<pid>.txt`` when it has started.
- bench.mode=overload: a spout emitting as fast as it may (with message ids when
  bench.acked is true) -> a bolt that sleeps bench.slow_ms per tuple. The spout
  rewrites ``fast-<task>-<pid>.txt`` as "<emitted> <acked> <failed>" and the bolt
  ``slow-<task>-<pid>.txt`` as "<processed>", every 0.5 s.
"""

import os
import time
from pathlib import Path

from streamgale import Bolt, Spout, Topology


def out_file(context, kind):
    return Path(context.config["bench.output_dir"]) / f"{kind}-{context.task_id}-{os.getpid()}.txt"


def rewrite(path, text):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Quiet(Spout):
    outputs = ["n"]

    def open(self, context):
        out_file(context, "ready").write_text("")


class Sink(Bolt):
    def prepare(self, context):
        out_file(context, "ready").write_text("")

    def process(self, tup):
        pass


class Fast(Spout):
    outputs = ["n"]

    def open(self, context):
        self.acked_mode = bool(context.config.get("bench.acked", False))
        self.file = out_file(context, "fast")
        self.n = self.acked = self.failed = 0
        self.next_report = 0.0

    def next_tuple(self):
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + 0.5
            rewrite(self.file, f"{self.n} {self.acked} {self.failed}")
        self.n += 1
        if self.acked_mode:
            self.emit([self.n], msg_id=self.n)
        else:
            self.emit([self.n])

    def ack(self, msg_id):
        self.acked += 1

    def fail(self, msg_id):
        self.failed += 1


class Slow(Bolt):
    def prepare(self, context):
        self.delay = float(context.config.get("bench.slow_ms", 1)) / 1000
        self.file = out_file(context, "slow")
        self.done = 0
        self.next_report = 0.0

    def process(self, tup):
        time.sleep(self.delay)  # a slow external call
        self.done += 1
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + 0.5
            rewrite(self.file, str(self.done))


def build_topology(config):
    mode = config.get("bench.mode", "idle")
    t = Topology(f"bench-{mode}", config={"topology.workers": 2})
    if mode == "idle":
        t.spout("quiet", Quiet, parallelism=2)
        t.bolt("sink", Sink, parallelism=2).shuffle("quiet")
    else:
        t.spout("fast", Fast)
        t.bolt("slow", Slow).shuffle("fast")
    return t
