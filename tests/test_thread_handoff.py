"""Bolts with a thread of their own: results handed back with call_soon_threadsafe run on the
loop thread (emit, ack, fail work there); accepts_input() holds input back (docs/execution-model.md)."""

from __future__ import annotations

import queue
import threading

from streamgale import Bolt, Spout, Topology
from streamgale.config import Config
from streamgale.local import LocalCluster


class Numbers(Spout):
    outputs = ["n"]
    count = 500
    acked: set = set()
    failed: set = set()

    def open(self, context):
        self.i = 0

    def next_tuple(self):
        if self.i < self.count:
            self.emit([self.i], msg_id=self.i)
            self.i += 1

    def ack(self, msg_id):
        self.acked.add(msg_id)

    def fail(self, msg_id):
        self.failed.add(msg_id)


class Offload(Bolt):
    """Doubles each number on a thread of its own; fails multiples of 100 from its callback by
    raising; never holds more than 10 inputs."""

    auto_ack = False
    outputs = ["n", "double"]
    threads: set = set()
    peak = 0

    def prepare(self, context):
        self.work: queue.Queue = queue.Queue()
        self.inside = 0
        threading.Thread(target=self._run, daemon=True).start()

    def accepts_input(self):
        return self.inside < 10

    def process(self, tup):
        self.inside += 1
        type(self).peak = max(type(self).peak, self.inside)
        self.work.put(tup)

    def _run(self):
        while True:
            tup = self.work.get()
            self.call_soon_threadsafe(lambda tup=tup: self._done(tup, tup["n"] * 2))

    def _done(self, tup, double):
        type(self).threads.add(threading.get_ident())
        self.inside -= 1
        if tup["n"] % 100 == 0:
            self.fail(tup)
            raise ValueError(f"no double for {tup['n']}")
        self.emit([tup["n"], double], anchors=tup)
        self.ack(tup)


class Collect(Bolt):
    got: list = []

    def process(self, tup):
        self.got.append(tuple(tup.values))


def test_results_handed_back_from_a_thread_are_emitted_and_acked_on_the_loop_thread():
    t = Topology("handoff")
    t.spout("numbers", Numbers)
    t.bolt("offload", Offload).shuffle("numbers")
    t.bolt("collect", Collect).shuffle("offload")
    lc = LocalCluster(t, Config().merged({"topology.queue_size": 16}, "test"))
    result = lc.run(until=lambda: len(Numbers.acked) + len(Numbers.failed) == 500, duration=30)
    assert Numbers.failed == {0, 100, 200, 300, 400}
    assert Numbers.acked == set(range(500)) - Numbers.failed
    assert sorted(Collect.got) == [(n, 2 * n) for n in sorted(Numbers.acked)]
    assert Offload.threads == {threading.get_ident()}  # the loop ran in this thread
    assert Offload.peak <= 10 + 256  # held back once 10 were inside (plus one turn already taken)
    assert len(result.errors) == 5
    assert result.errors[0].details.startswith("in a call handed to bolt 'offload' task 3 by another thread")
    assert str(result.errors[0].error) == "no double for 0"
