"""A reliable topology over a durable source, for fault injection.

The spout's source is the numbers 0..test.total-1 (task i takes every n-th),
emitted at test.rate per second per task. Its "commit log" is the ack files
under test.output_dir ("n time" per acked message): a (re)started spout task
skips what was acked before and replays everything else, like a queue consumer
resuming from committed offsets. It records "n time" when it first emits a
message in the emit files, so a test can tell how long each message took.
The "work" bolt (fields grouping) records "time task pid n" per tuple processed.
"""

import os
import time
from collections import deque
from pathlib import Path

from streamgale import Bolt, ReliableSpout, Topology


class Numbers(ReliableSpout):
    outputs = ["n"]

    def open(self, context):
        out = Path(context.config["test.output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        done = set()
        for f in out.glob(f"acks-{context.task_id}-*.txt"):
            done.update(int(line.split()[0]) for line in f.read_text().splitlines() if line.strip())
        total = int(context.config["test.total"])
        self.todo = [n for n in range(context.task_index, total, context.task_count) if n not in done]
        self.todo.reverse()
        self.rate = float(context.config["test.rate"])
        self.started = time.monotonic()
        self.sent = 0
        self.log = open(out / f"acks-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)
        self.emits = open(out / f"emits-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)

    def next_message(self):
        if not self.todo or self.sent > (time.monotonic() - self.started) * self.rate:
            return None
        self.sent += 1
        n = self.todo.pop()
        self.emits.write(f"{n} {time.time()}\n")
        return n, [n]

    def on_acked(self, msg_id, values):
        self.log.write(f"{msg_id} {time.time()}\n")


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
    """Acks each tuple test.hold seconds after it came (default 0: at once), as a sink writing
    batches does, so its worker always holds trees in flight."""

    auto_ack = False

    def prepare(self, context):
        self.hold = float(context.config.get("test.hold", 0))
        self.held = deque()

    def process(self, tup):
        self.held.append((time.monotonic(), tup))
        self.release()

    def process_tick(self, tup):
        self.release()

    def release(self):
        due = time.monotonic() - self.hold
        while self.held and self.held[0][0] <= due:
            self.ack(self.held.popleft()[1])


topology = Topology("durable", config={"topology.workers": 4, "topology.message_timeout": 10})
topology.spout("numbers", Numbers, parallelism=2)
topology.bolt("work", Work, parallelism=4).fields("numbers", "n")
topology.bolt("done", Done, parallelism=2, config={"topology.tick_interval": 0.1}).shuffle("work")
