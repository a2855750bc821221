"""An endless spout into a bare-protocol shell bolt, one of whose two subprocesses hangs (it
reads no more, so it never sees its stdin close), for the test that a worker's kill -9 takes its
subprocesses with it. Marker files go to $MULTILANG_MARKS."""

import os
import sys

from streamgale import Spout, Topology
from streamgale.multilang import ShellBolt


class Endless(Spout):
    outputs = ["n"]

    def open(self, context):
        self.n = 0

    def next_tuple(self):
        self.n += 1
        self.emit([self.n])


topology = Topology("endless")
topology.spout("src", Endless)
topology.bolt("shell", ShellBolt(command=[sys.executable, "raw_bolt.py", "hang", "json",
                                                 os.environ.get("MULTILANG_MARKS", ".")], outputs=["n"]),
              parallelism=2).shuffle("src")
