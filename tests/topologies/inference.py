"""Sensor readings -> OnnxBolt -> a recording bolt, for the model bolt tests on a real cluster.

The test copies this file into a code directory beside ``model.onnx`` (shipped in the code
package). Config: test.count (readings, ids 0..count-1, from streamgale.dev.models.sensor_readings
with seed 11), test.rate (readings per second the spout offers), test.output_dir (each task of
"record" appends "<id> <score task> <model version> <score>" lines to record-<task>-<pid>.txt).
"""

import os
import time
from pathlib import Path

from streamgale import Bolt, Spout, Topology
from streamgale.dev.models import FEATURES, sensor_readings
from streamgale.inference import OnnxBolt


class Readings(Spout):
    outputs = ["id", *FEATURES]

    def open(self, context):
        count = int(context.config["test.count"])
        self.readings = sensor_readings(count, seed=11)[0].tolist()
        self.rate = float(context.config["test.rate"])
        self.next = 0
        self.started = time.monotonic()
        self.replay = []

    def next_tuple(self):
        if self.replay:
            i = self.replay.pop()
        elif self.next < len(self.readings) and self.next < (time.monotonic() - self.started) * self.rate:
            i = self.next
            self.next += 1
        else:
            return
        self.emit([i, *self.readings[i]], msg_id=i)

    def fail(self, msg_id):
        self.replay.append(msg_id)


class Record(Bolt):
    def prepare(self, context):
        out = Path(context.config["test.output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / f"record-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)

    def process(self, tup):
        self.log.write(f"{tup['id']} {tup.source_task} {tup['model_version']} {tup['score']!r}\n")


class Scorer(OnnxBolt):
    model = "model.onnx"
    feeds = {"readings": list(FEATURES)}
    outputs = ["id", "score", "model_version"]
    max_batch = 32


def build_topology(config):
    t = Topology("inference", config={"topology.workers": 2})
    t.spout("readings", Readings)
    t.bolt("score", Scorer, parallelism=2).shuffle("readings")
    t.bolt("record", Record, parallelism=2).shuffle("score")
    return t
