"""A file pipeline for the cluster test of the file source (tests/test_connectors_files.py).

DirectorySource over files.dir (``*.txt``, offsets in files.offsets_dir) -> shuffle ->
a counting sink that records every line it processes under test.output_dir (one file
per task and process, line-buffered) before it is acked. The test's lines say where
they are ("name:offset:payload"), so the records can be checked exactly.
"""

import os
from pathlib import Path

from streamgale import Bolt, Topology
from streamgale.connectors.files import DirectorySource


class CountingSink(Bolt):
    def prepare(self, context):
        out = Path(context.config["test.output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / f"seen-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)

    def process(self, tup):
        name, offset, _ = tup["line"].split(":", 2)
        self.log.write(f"{name}\t{int(offset)}\n")

    def cleanup(self):
        self.log.close()


topology = Topology("file-pipeline", config={"topology.workers": 2, "topology.message_timeout": 10,
                                             "files.pattern": "*.txt", "files.poll_interval": 0.05})
topology.spout("files", DirectorySource, parallelism=2)
topology.bolt("count", CountingSink, parallelism=2).shuffle("files")
