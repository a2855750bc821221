"""Topologies with the mistakes a Storm or streamparse user makes (tests/test_user_traps.py).

Config (user keys): traps.count (how many numbers the spout emits), traps.mistake (which bolt
to run: see BOLTS), traps.fail_prepare (the bolt's prepare raises).
"""

from streamgale import Bolt, Spout, Topology


class Numbers(Spout):
    """Emits 0 .. traps.count - 1, each tracked under its own message id; remembers the outcome."""

    outputs = ["n"]

    def open(self, context):
        self.total = int(context.config.get("traps.count", 100))
        self.next = 0
        self.acked, self.failed = [], []

    def next_tuple(self):
        if self.next < self.total:
            self.emit([self.next], msg_id=self.next)
            self.next += 1

    def ack(self, msg_id):
        self.acked.append(msg_id)

    def fail(self, msg_id):
        self.failed.append(msg_id)

    def exhausted(self):
        return self.next >= self.total


class AcksInAutoMode(Bolt):
    """The streamparse habit: acks its input although the bolt auto-acks."""

    outputs = ["n"]

    def prepare(self, context):
        if context.config.get("traps.fail_prepare"):
            raise ConnectionError("cannot reach the database at db.example:5432")

    def process(self, tup):
        self.emit([tup["n"]])
        self.ack(tup)


class AcksTwice(Bolt):
    auto_ack = False
    outputs = ["n"]

    def process(self, tup):
        self.emit([tup["n"]], anchors=[tup])
        self.ack(tup)
        self.ack(tup)


class FailsEvenInAutoMode(Bolt):
    """Fails the odd numbers itself; the runtime acks the rest."""

    def process(self, tup):
        if tup["n"] % 2:
            self.fail(tup)
            self.fail(tup)  # and once more: ignored


BOLTS = {"auto": AcksInAutoMode, "twice": AcksTwice, "fail": FailsEvenInAutoMode}


def build_topology(config):
    topology = Topology("traps", config={"topology.workers": 1})
    topology.spout("numbers", Numbers)
    topology.bolt("mistake", BOLTS[config.get("traps.mistake", "auto")], parallelism=2).shuffle("numbers")
    return topology
