"""A topology of many executors that never runs, for the nimbus scale benchmark (benchmarks/scale.py).

spout (half the executors) -> bolt (the other half, shuffle); no ackers. User
config key: bench.executors (default 1,000), the total. The benchmark's
simulated supervisors never start workers, so only its placement matters.
"""

from streamgale import Bolt, Spout, Topology


class Idle(Spout):
    outputs = ["n"]

    def next_tuple(self):
        pass


class Sink(Bolt):
    def process(self, tup):
        pass


def build_topology(config):
    executors = int(config.get("bench.executors", 1000))
    if executors < 2:
        raise ValueError(f"bench.executors must be >= 2 (a spout and a bolt), got {executors}")
    t = Topology("bench-scale", config={"topology.acker_executors": 0})
    t.spout("spout", Idle, parallelism=executors // 2)
    t.bolt("bolt", Sink, parallelism=executors - executors // 2).shuffle("spout")
    return t
