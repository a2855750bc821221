"""Word count with acked sentences and a paced spout, for complete-latency benchmarks.

sentences (2 tasks) -> split (4, shuffle) -> count (4, fields on "word"); every
sentence is emitted with a message id, so its tuple tree is tracked.

User config keys:

- bench.output_dir: where the spout tasks write their files;
- bench.rate: sentences per second over all spout tasks (0: as fast as allowed);
- bench.record_latency: keep each sentence's complete latency (default true).

Each spout task (file suffix ``<task>-<pid>``) writes:

- ``progress-*.txt``: "<time.time()> <acked> <failed> <emitted>", a line appended
  every 0.5 s and in close();
- ``latency-*.txt``: "<emit time.time()> <latency ms>" per acked sentence, for
  sentences emitted after the task's first second (warm-up), written in close()
  (or once ``LATENCY_BUFFER`` are held): formatting thousands of lines in the
  spout's turn every 0.5 s stalled the executor loop for milliseconds, which
  showed as the measured p99. They are kept as floats in two arrays, not as a
  tuple per sentence: half a million live tuples made the worker's young
  garbage collections traverse 50,000 survivors every 1.7 s (12-15 ms each,
  measured with ``gc.callbacks``), and those pauses were the p99 measured.
"""

import os
import random
import time
from array import array
from collections import Counter
from pathlib import Path

from cluster_word_count import VOCABULARY, Split  # its neighbour in this directory (packed with it)

from streamgale import Bolt, Spout, Topology

WARM_UP = 1.0       # seconds after the first next_tuple whose sentences are not recorded
FLUSH_EVERY = 0.5   # seconds between file appends
MAX_DEBT = 0.1      # a paced spout that fell behind catches up at most this many seconds' worth
LATENCY_BUFFER = 500_000  # latencies held in memory before they are written anyway


class Sentences(Spout):
    outputs = ["sentence"]

    def open(self, context):
        cfg = context.config
        rng = random.Random(42 + context.task_id)
        self.sentences = [" ".join(rng.choices(VOCABULARY, k=10)) for _ in range(1000)]
        rate = float(cfg.get("bench.rate", 0)) / context.task_count
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.record = bool(cfg.get("bench.record_latency", True))
        out = Path(cfg["bench.output_dir"])
        tag = f"{context.task_id}-{os.getpid()}"
        self.progress_file = out / f"progress-{tag}.txt"
        self.latency_file = out / f"latency-{tag}.txt"
        self.emit_times = {}          # msg_id -> time.perf_counter() at emit
        self.sent = array("d")         # emit perf_counter of each acked sentence, not yet written
        self.latency = array("d")      # its latency, seconds (parallel)
        self.n = self.acked = self.failed = 0
        self.perf0, self.wall0 = time.perf_counter(), time.time()
        self.started = None
        self.next_at = 0.0
        self.next_flush = self.perf0 + FLUSH_EVERY

    def next_tuple(self):
        now = time.perf_counter()
        if self.started is None:
            self.started = self.next_at = now
            self.record_from = now + WARM_UP
        if now >= self.next_flush:
            self.flush(now)
        if self.interval:
            if now < self.next_at:
                return  # ahead of schedule: emit nothing, do not block
            self.next_at = max(self.next_at + self.interval, now - MAX_DEBT)
        n = self.n
        self.n += 1
        self.emit_times[n] = time.perf_counter()
        self.emit([self.sentences[n % 1000]], msg_id=n)

    def ack(self, msg_id):
        now = time.perf_counter()
        sent = self.emit_times.pop(msg_id)
        self.acked += 1
        if self.record and sent >= self.record_from:
            self.sent.append(sent)
            self.latency.append(now - sent)
        if now >= self.next_flush:
            self.flush(now)

    def fail(self, msg_id):
        self.emit_times.pop(msg_id, None)
        self.failed += 1

    def flush(self, now, latencies=False):
        self.next_flush = now + FLUSH_EVERY
        offset = self.wall0 - self.perf0  # perf_counter -> time.time()
        with open(self.progress_file, "a") as f:
            f.write(f"{now + offset!r} {self.acked} {self.failed} {self.n}\n")
        if self.sent and (latencies or len(self.sent) >= LATENCY_BUFFER):
            lines = [f"{sent + offset!r} {lat * 1000:.3f}\n" for sent, lat in zip(self.sent, self.latency)]
            self.sent, self.latency = array("d"), array("d")
            with open(self.latency_file, "a") as f:
                f.write("".join(lines))

    def close(self):
        self.flush(time.perf_counter(), latencies=True)


class Count(Bolt):
    outputs = ["word", "count"]

    def prepare(self, context):
        self.counts = Counter()

    def process(self, tup):
        word = tup.values[0]
        self.counts[word] += 1
        self.emit([word, self.counts[word]])


def build_topology(config):
    t = Topology("bench-latency", config={"topology.workers": 2})
    t.spout("sentences", Sentences, parallelism=2)
    t.bolt("split", Split, parallelism=4).shuffle("sentences")
    t.bolt("count", Count, parallelism=4).fields("split", "word")
    return t
