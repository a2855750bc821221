"""Word count across four languages' worth of components, over Storm's multi-lang protocol:

    sentences (Python, pystorm, msgpack) -> split (Node.js, no library)
      -> lower (Python, pystorm) -> count (Java, no library) -> report (StreamGale, Python)

The pystorm components are written for Apache Storm and run unchanged. Build the Java bolt
first, then run it:

    javac examples/multilang/WordCount.java
    streamgale local examples/multilang/word_count.py

Config: ``multilang.sentences`` (how many sentences; endless if unset) and
``multilang.output`` (a file the report bolt writes "<word> <count>" lines to as counts
change; it logs the counts otherwise).
"""

import logging
import sys

from streamgale import Bolt, Topology
from streamgale.multilang import ShellBolt, ShellSpout

log = logging.getLogger("word_count")


class Report(Bolt):
    def prepare(self, context):
        path = context.config.get("multilang.output")
        self.out = open(path, "a", buffering=1) if path else None

    def process(self, tup):
        if self.out is not None:
            self.out.write(f"{tup['word']} {tup['count']}\n")
        else:
            log.info("%s %d", tup["word"], tup["count"])


topology = Topology("multilang-word-count", {"topology.workers": 2})
# Run with the worker's own interpreter, so the packages it has (pystorm) are there.
topology.spout("sentences", ShellSpout(command=[sys.executable, "sentences.py", "msgpack"], framing="msgpack",
                                       outputs=["sentence"]))
topology.bolt("split", ShellBolt(command=["node", "split.js"], outputs=["word"]), parallelism=2).shuffle("sentences")
topology.bolt("lower", ShellBolt(command=[sys.executable, "lower.py"], outputs=["word"])).shuffle("split")
topology.bolt("count", ShellBolt(command=["java", "-cp", ".", "WordCount"], outputs=["word", "count"]),
              parallelism=2).fields("lower", "word")
topology.bolt("report", Report).shuffle("count")
