"""A topology whose user code is slow: a spout taking 80 ms per next_tuple and a bolt taking 25 ms per
tuple, fed by 4 spout tasks (the cases that used to get a worker SIGKILLed for "no heartbeat")."""

import time

from streamgale import Bolt, Spout, Topology


class SlowSpout(Spout):
    outputs = ["n"]

    def open(self, context):
        self.n = 0

    def next_tuple(self):
        time.sleep(0.08)
        self.n += 1
        self.emit([self.n], msg_id=self.n)


class SlowBolt(Bolt):
    def process(self, tup):
        time.sleep(0.025)


topology = Topology("slow")
topology.spout("slow-spout", SlowSpout, parallelism=4)
topology.bolt("slow-bolt", SlowBolt, parallelism=1).shuffle("slow-spout")
