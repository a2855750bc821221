"""Redis Streams -> identity -> RedisCommitSink, for the exactly-once connector test on a cluster.

Entries of stream ``in`` carry a field ``n``; the spout (consumer group ``pipeline``, two
tasks) emits it, ``Identity`` passes it on (shuffle), and ``Out`` (a RedisCommitSink, two
tasks) appends it to stream ``out`` at checkpoint commit. Submit with ``-c redis.url=...``
and a durable state backend (``topology.state.backend=redis``).
"""

from streamgale import Bolt, Topology
from streamgale.connectors.redis_streams import RedisCommitSink, RedisStreamSpout

IN_STREAM, OUT_STREAM, GROUP = "in", "out", "pipeline"


class Entries(RedisStreamSpout):
    stream_key = IN_STREAM
    group = GROUP
    fields = {"n": "n"}
    reconnect_backoff_max = 1.0


class Identity(Bolt):
    outputs = ["n"]

    def process(self, tup):
        self.emit([tup["n"]])


class Out(RedisCommitSink):
    stream_key = OUT_STREAM
    fields = ["n"]


topology = Topology("redis-pipeline", config={"topology.workers": 3, "topology.message_timeout": 20,
                                             "topology.state.checkpoint_interval": 0.5})
topology.spout("entries", Entries, parallelism=2)
topology.bolt("identity", Identity, parallelism=2).shuffle("entries")
topology.bolt("out", Out, parallelism=2).shuffle("identity")
