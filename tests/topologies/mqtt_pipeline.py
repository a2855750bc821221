"""MQTT -> a recording bolt, for the MQTT test on a real cluster.

Config: test.mqtt_port (the broker), test.topic (the topic filter), test.output_dir
(each task of "record" appends "<payload>" lines to record-<task>-<pid>.txt, one per
message processed; the test reads them).
"""

import os
from pathlib import Path

from streamgale import Bolt, Topology
from streamgale.connectors.mqtt import MqttSource


class Record(Bolt):
    def prepare(self, context):
        out = Path(context.config["test.output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / f"record-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)

    def process(self, tup):
        self.log.write(f"{tup['payload']}\n")


def build_topology(config):
    t = Topology("mqtt-pipeline", config={"topology.workers": 2})
    t.spout("mqtt", MqttSource(str(config["test.topic"]), "127.0.0.1", int(config["test.mqtt_port"]),
                               payload_format="text"))
    t.bolt("record", Record, parallelism=2).shuffle("mqtt")
    return t
