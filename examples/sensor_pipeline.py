"""Sensors end to end: readings over MQTT -> per-sensor averages over event-time windows -> Redis.

Readings are JSON objects ``{"sensor": "s1", "ts": <seconds since the epoch>, "celsius": 21.5}``
published at QoS 1 to ``sensors/<id>``. Each 10 s window (tumbling, by the readings'
own timestamps, 1 s of lateness allowed) gives one average per sensor, written to the
Redis hash ``sensor-averages`` as ``<sensor>@<window start>`` -> the average.

Run it (a broker and a Redis server of your own):
    streamgale local examples/sensor_pipeline.py -c pipeline.mqtt_port=1883 \\
        -c redis.url=redis://127.0.0.1:6379/0
A reading is acknowledged to the broker (PUBACK) only once its window's average is
written to Redis; until then a crash gets it delivered again (at-least-once; the
average is written again, to the same field).
"""

from collections import defaultdict

from streamgale import Bolt, Duration, Topology, WindowedBolt
from streamgale.connectors.mqtt import MqttSource
from streamgale.connectors.redis_streams import RedisKeyValueSink


class Readings(Bolt):
    """MQTT messages (topic, payload as JSON) -> (sensor, ts, celsius)."""

    outputs = ["sensor", "ts", "celsius"]

    def process(self, tup):
        reading = tup["payload"]
        self.emit([str(reading["sensor"]), float(reading["ts"]), float(reading["celsius"])])


class Average(WindowedBolt):
    window_length = Duration(10)
    timestamp_field = "ts"
    lag = 1.0
    watermark_interval = 0.2
    outputs = ["key", "average"]

    def process_window(self, window):
        readings = defaultdict(list)
        for t in window.tuples:
            readings[t["sensor"]].append(t["celsius"])
        for sensor, values in sorted(readings.items()):
            self.emit([f"{sensor}@{int(window.start)}", round(sum(values) / len(values), 3)])


class Store(RedisKeyValueSink):
    key_field = "key"
    value_field = "average"
    hash_key = "sensor-averages"


def build_topology(config):
    port = int(config.get("pipeline.mqtt_port", 1883))
    t = Topology("sensor-pipeline", config={"topology.message_timeout": 60})
    t.spout("mqtt", MqttSource("sensors/+", "127.0.0.1", port, payload_format="json"))
    t.bolt("readings", Readings).shuffle("mqtt")
    t.bolt("average", Average).global_("readings")
    t.bolt("store", Store).shuffle("average")
    return t
