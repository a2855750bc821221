"""Per-sensor averages over event-time sliding windows: 10 s windows every 5 s.

sensors (readings stamped with their event time, some out of order)
      -> average (a WindowedBolt, fields-grouped by sensor)
      -> report (prints each window's averages, and the readings that came too late)

Run it:  streamgale local examples/sensor_windows.py --duration 10
The sensors live in simulated time that runs ``sensors.speedup`` times faster than
the wall clock (default 10), so a 10 s window passes every second. Settings
(override with -c):
  sensors.speedup     simulated seconds per wall-clock second (default 10)
  sensors.late_every  every n-th reading of a spout task is a straggler a minute behind (default 250)
"""

import math
import random
import time
from collections import defaultdict
from datetime import datetime, timezone

from streamgale import Bolt, Spout, Topology
from streamgale.windowing import Duration, WindowedBolt

SENSORS = ["attic", "boiler", "cellar", "garage", "kitchen"]
BASE = {"attic": 26.0, "boiler": 31.0, "cellar": 12.0, "garage": 16.0, "kitchen": 21.0}
LOW, HIGH = 0.0, 40.0  # every reading lies in this range (degrees Celsius)
START = 1_700_000_000  # simulated epoch seconds when the sensors start (a multiple of 5)
EVERY = 0.5  # simulated seconds between two readings of a sensor
DISORDER = 1.5  # a reading's timestamp is up to this far behind its turn: out of order, within the lag


class SensorSpout(Spout):
    """Readings of this task's share of the sensors, stamped with simulated event time."""

    outputs = ["sensor", "ts", "celsius"]

    def open(self, context):
        self.rng = random.Random(context.task_id)
        self.sensors = SENSORS[context.task_index::context.task_count]
        self.speedup = float(context.config.get("sensors.speedup", 10))
        self.late_every = int(context.config.get("sensors.late_every", 250))
        self.started = time.monotonic()
        self.due = START  # simulated time of the next round of readings
        self.sent = 0

    def next_tuple(self):
        if self.due > START + (time.monotonic() - self.started) * self.speedup:
            return  # not yet: never block in next_tuple
        for sensor in self.sensors:
            ts = self.due - self.rng.uniform(0, DISORDER)
            self.sent += 1
            if self.sent % self.late_every == 0:
                ts -= 60  # a straggler: behind the watermark, so it goes to the late stream
            celsius = BASE[sensor] + 5 * math.sin(ts / 60) + self.rng.gauss(0, 0.5)
            self.emit([sensor, ts, min(HIGH, max(LOW, round(celsius, 2)))], msg_id=self.sent)
        self.due += EVERY


class SensorAverage(WindowedBolt):
    """The average reading of each sensor in each 10 s window, every 5 s of event time."""

    window_length = Duration(10)
    window_slide = Duration(5)
    timestamp_field = "ts"
    lag = 2.0  # readings arrive up to DISORDER (1.5 s) out of order
    watermark_interval = 0.5
    late_stream = "late"
    outputs = {"default": ["sensor", "start", "end", "average", "readings"], "late": ["tuple"]}

    def process_window(self, window):
        readings = defaultdict(list)
        for t in window.tuples:
            readings[t["sensor"]].append(t["celsius"])
        for sensor, values in sorted(readings.items()):
            # Anchored to every reading of the window (the default): the readings are acked
            # once they leave their last window.
            self.emit([sensor, window.start, window.end, round(sum(values) / len(values), 2), len(values)])


def clock(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S")


class Report(Bolt):
    def process(self, tup):
        if tup.stream == "late":
            sensor, ts, celsius = tup["tuple"]
            print(f"late: {sensor} read {celsius} at {clock(ts)}, after its windows were done", flush=True)
            return
        sensor, start, end, average, n = tup.values
        print(f"[{clock(start)}, {clock(end)}) {sensor:<8} {average:6.2f} C over {n} readings", flush=True)


topology = Topology("sensor-windows")
topology.spout("sensors", SensorSpout, parallelism=2)
# component_config() gives the tick interval the windows need (their watermark interval).
topology.bolt("average", SensorAverage, parallelism=2,
              config=SensorAverage.component_config()).fields("sensors", "sensor")
topology.bolt("report", Report).global_("average").global_("average", stream="late")
