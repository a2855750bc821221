"""Anomaly scoring of machine sensors with an ONNX model, then windowed anomaly rates.

machines (readings of 6 machines; press-3 starts failing after a while)
      -> score (OnnxBolt: the anomaly MLP scores readings in micro-batches)
      -> rate (a WindowedBolt, fields-grouped by machine: each machine's mean score and
               share of anomalous readings in 10 s tumbling windows of event time)
      -> alert (prints each window; ALERT when a machine's share crosses the threshold)

First train the model (writes examples/anomaly_model.onnx, beside this file):
    python examples/train_anomaly_model.py
Then:
    streamgale local examples/anomaly_scoring.py --duration 10

The machines live in simulated time, ``machines.speedup`` times faster than the wall
clock. Settings (override with -c):
  anomaly.model        the model file, relative to this file's directory (default anomaly_model.onnx)
  anomaly.threshold    share of anomalous readings in a window that raises an alert (default 0.5)
  machines.speedup     simulated seconds per wall-clock second (default 10)
  machines.fail_after  simulated seconds before press-3 starts failing (default 20)
"""

import time
from collections import OrderedDict, defaultdict
from pathlib import Path

from streamgale import Bolt, Spout, Topology
from streamgale.dev.models import FEATURES, sensor_readings
from streamgale.inference import OnnxBolt
from streamgale.topology import TopologyError
from streamgale.windowing import Duration, WindowedBolt

MACHINES = ["lathe-1", "lathe-2", "press-3", "press-4", "mill-5", "mill-6"]
FAILING = "press-3"
START = 1_700_000_000  # simulated epoch seconds when the machines start
EVERY = 0.1  # simulated seconds between two readings of a machine

HEALTHY, _ = sensor_readings(20_000, seed=7, anomaly_rate=0.0)
FAULTY, _ = sensor_readings(2_000, seed=8, anomaly_rate=1.0)


class Machines(Spout):
    """Readings of this task's share of the machines, stamped with simulated event time, each
    emitted with a message id: the spout hears when a reading has been scored and has left its
    window (``ack``), or not (``fail``)."""

    outputs = ["machine", "ts", *FEATURES]

    def open(self, context):
        self.machines = MACHINES[context.task_index::context.task_count]
        self.speedup = float(context.config.get("machines.speedup", 10))
        self.fail_at = START + float(context.config.get("machines.fail_after", 20))
        self.started = time.monotonic()
        self.rounds = 0  # rounds of readings emitted; the next one is stamped START + rounds * EVERY
        self.n = 0
        self.pending = OrderedDict()  # msg_id -> (machine, ts) of the readings in flight, oldest first
        self.acked = self.failed = 0

    def next_tuple(self):
        due = START + self.rounds * EVERY
        if due > START + (time.monotonic() - self.started) * self.speedup:
            return  # not yet: never block in next_tuple
        for machine in self.machines:
            source = FAULTY if machine == FAILING and due >= self.fail_at else HEALTHY
            reading = source[self.n % len(source)].tolist()
            self.n += 1
            self.pending[self.n] = (machine, due)
            self.emit([machine, due, *reading], msg_id=self.n)
        self.rounds += 1

    def ack(self, msg_id):
        del self.pending[msg_id]
        self.acked += 1

    def fail(self, msg_id):
        machine, ts = self.pending.pop(msg_id)
        self.failed += 1
        print(f"reading of {machine} at +{ts - START:.1f}s failed (timed out or not scored)", flush=True)

    def oldest_pending(self):
        """The event time of the oldest reading in flight, or None."""
        return next(iter(self.pending.values()))[1] if self.pending else None


class AnomalyRate(WindowedBolt):
    """Each machine's mean anomaly score and share of readings scored over 0.5, per window."""

    window_length = Duration(10)
    timestamp_field = "ts"
    lag = 1.0
    watermark_interval = 0.5
    outputs = ["machine", "start", "mean_score", "anomalous", "readings"]

    def process_window(self, window):
        scores = defaultdict(list)
        for t in window.tuples:
            scores[t["machine"]].append(t["score"])
        for machine, values in sorted(scores.items()):
            share = sum(s > 0.5 for s in values) / len(values)
            self.emit([machine, window.start, round(sum(values) / len(values), 3), round(share, 3), len(values)])


class Alert(Bolt):
    def prepare(self, context):
        self.threshold = float(context.config.get("anomaly.threshold", 0.5))

    def process(self, tup):
        machine, start, mean, share, n = tup.values
        alarm = "  ALERT" if share >= self.threshold else ""
        print(f"window +{start - START:5.0f}s {machine:<8} mean score {mean:.3f}, "
              f"{share:6.1%} of {n} readings anomalous{alarm}", flush=True)


def build_topology(config):
    model = str(config.get("anomaly.model", "anomaly_model.onnx"))
    if not (Path(__file__).resolve().parent / model).is_file():
        raise TopologyError(f"the anomaly model {model} is missing beside {Path(__file__).name}: "
                            f"train it first with `python examples/train_anomaly_model.py`")
    topology = Topology("anomaly-scoring")
    topology.spout("machines", Machines)
    topology.bolt("score", OnnxBolt(model=model, feeds={"readings": list(FEATURES)},
                                    outputs=["machine", "ts", "score"], max_batch=64, max_wait=0.005),
                  parallelism=2).shuffle("machines")
    topology.bolt("rate", AnomalyRate, parallelism=2,
                  config=AnomalyRate.component_config()).fields("score", "machine")
    topology.bolt("alert", Alert).global_("rate")
    return topology
