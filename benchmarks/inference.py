"""Model inference: OnnxBolt by ``max_batch`` (the suite's ``inference`` group).

``python -m benchmarks.inference [--readings N] [--runs R] [--rate R] [--paced-seconds S]``
(in the suite: ``python -m benchmarks --groups inference``, options ``--inference-*``).

The model is the small anomaly MLP of ``streamgale.dev.models`` (4 inputs, two
hidden layers of 32, a score; trained on the spot, nothing is downloaded), run
by ONNX Runtime on the CPU with the bolt's default session options
(``topology.inference.*``: 1 intra-op and 1 inter-op thread). For each
``max_batch`` of 1, 8, 64 and 256 (``max_wait`` 5 ms, the default), in local
mode: readings spout -> ``OnnxBolt`` -> a sink bolt, parallelism 1, acked end
to end; every reading is emitted with a message id and its latency is the
time from its emit to the spout's ``ack`` (the whole tree: the batch's wait,
inference, the sink and the acker).

- saturated: ``--readings`` readings as fast as the spout may emit them
  (``topology.max_spout_pending`` 1000, the default, bounds the trees in
  flight); readings/s from the first emit to the last ack, and p50/p99 latency,
  which here is mostly queueing behind the 1000 pending trees;
- paced: the spout emits at a fixed ``--rate`` (default 1,000 readings/s, well
  under every row's capacity) for ``--paced-seconds``; p50/p99 latency is then
  what one reading waits at that load: its batch's ``max_wait`` unless the
  batch fills first, plus inference and acking;
- raw: the same readings through ``onnxruntime.InferenceSession.run`` in a
  plain loop on float32 arrays of exactly ``max_batch`` rows (same model file,
  same providers and threads); "vs raw" is StreamGale's saturated readings/s
  over it: what the engine adds (tuples, building the arrays, emitting and
  acking) over the model call alone. The bolt's batches may be smaller than
  ``max_batch`` (a batch also closes after ``max_wait``): its mean is shown
  ("batch"), and "batch ms", the p50 of the time its inference thread spends
  on one batch (building the input arrays, the model call, the output rows:
  the bolt's ``inference_ms_p50`` counter).

Every row is measured in the same run as its references, the scenarios
interleaved ``--runs`` times (the machine is shared); each figure is the median
over the runs. "vs mb 1" is a row's saturated readings/s over max_batch 1's;
the target: max_batch 64 (the default) at least 5x max_batch 1. The rows are
repeated for the GPU (``device`` gpu) only where onnxruntime has the
CUDAExecutionProvider; otherwise a line says they were skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamgale import Bolt, Config, LocalCluster, Spout, Topology

BATCHES = (1, 8, 64, 256)
MAX_WAIT = 0.005
TARGET = (64, 1, 5.0)  # (max_batch, reference max_batch, minimum ratio of their saturated readings/s)
FIELDS = ("id", "temperature", "humidity", "vibration", "current")
CPU = ("CPUExecutionProvider",)
GPU = ("CUDAExecutionProvider", "CPUExecutionProvider")


class Readings(Spout):
    """Emits ``rows`` once, each with its position as message id, at most ``rate`` per second
    (None: as fast as it may); records each one's emit-to-ack latency."""

    outputs = list(FIELDS)

    def __init__(self, rows: list[list[Any]], rate: float | None = None):
        self.rows = rows
        self.rate = rate

    def open(self, context):
        self.next = 0
        self.sent_at = [0.0] * len(self.rows)
        self.latencies: list[float] = []
        self.failed = 0
        self.start = self.end = 0.0

    def next_tuple(self):
        i = self.next
        if i >= len(self.rows):
            return
        now = time.perf_counter()
        if i == 0:
            self.start = now
        elif self.rate is not None and now < self.start + i / self.rate:
            return
        self.sent_at[i] = now
        self.next = i + 1
        self.emit(self.rows[i], msg_id=i)

    def ack(self, msg_id):
        self.end = time.perf_counter()
        self.latencies.append(self.end - self.sent_at[msg_id])

    def fail(self, msg_id):
        self.failed += 1

    def done(self) -> bool:
        return len(self.latencies) + self.failed >= len(self.rows)


class Sink(Bolt):
    def process(self, tup):
        pass


def rows(n: int) -> tuple[np.ndarray, list[list[Any]]]:
    """``n`` sensor readings (fixed seed): as a float32 array and as tuple values (id first)."""
    from streamgale.dev.models import sensor_readings

    x, _ = sensor_readings(n, seed=1)
    return x, [[i, *r] for i, r in enumerate(x.tolist())]


def pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bolt_run(model: Path, data: list[list[Any]], max_batch: int, providers: tuple[str, ...],
             rate: float | None = None) -> dict[str, float]:
    """One local-mode run of ``data`` through the OnnxBolt: readings/s, p50/p99 ms, bolt counters."""
    from streamgale.inference import OnnxBolt

    t = Topology("bench-inference")
    t.spout("readings", Readings(data, rate))
    t.bolt("score", OnnxBolt(model=str(model), feeds={"readings": list(FIELDS[1:])}, outputs=["id", "score"],
                             max_batch=max_batch, max_wait=MAX_WAIT)).shuffle("readings")
    t.bolt("sink", Sink).shuffle("score")
    config = Config().merged({"topology.inference.providers": list(providers)}, "benchmark")
    lc = LocalCluster(t, config)
    [spout] = [r.instance for e in lc.loop.spouts for r in e.runners]
    [bolt] = [r.instance for e in lc.loop.bolts for r in e.runners if isinstance(r.instance, OnnxBolt)]
    timeout = 120 + (len(data) / rate if rate else 0)
    result = lc.run(duration=timeout, until=spout.done)
    if result.errors or spout.failed or len(spout.latencies) != len(data):
        raise RuntimeError(f"inference run (max_batch {max_batch}) acked {len(spout.latencies)} of {len(data)} "
                           f"readings, {spout.failed} failed; errors: {result.errors}")
    latencies = sorted(spout.latencies)
    counters = bolt.counters()
    return {"per_s": len(data) / (spout.end - spout.start), "p50_ms": pct(latencies, 0.5) * 1000,
            "p99_ms": pct(latencies, 0.99) * 1000, "batch_mean": counters["batch_size_mean"],
            "inference_ms_p50": counters["inference_ms_p50"], "queue_wait_ms_p50": counters["queue_wait_ms_p50"]}


class Passthrough(Bolt):
    """The pipeline without a model: one output per reading, as the model bolt emits."""

    outputs = ["id", "score"]

    def process(self, tup):
        self.emit([tup.values[0], 0.0])


def pipeline_run(data: list[list[Any]]) -> dict[str, float]:
    """The same topology with :class:`Passthrough` for the model bolt: the engine's own ceiling."""
    t = Topology("bench-pipeline")
    t.spout("readings", Readings(data))
    t.bolt("score", Passthrough).shuffle("readings")
    t.bolt("sink", Sink).shuffle("score")
    lc = LocalCluster(t, Config())
    [spout] = [r.instance for e in lc.loop.spouts for r in e.runners]
    lc.run(duration=120, until=spout.done)
    if spout.failed or len(spout.latencies) != len(data):
        raise RuntimeError(f"pipeline run acked {len(spout.latencies)} of {len(data)} readings")
    return {"per_s": len(data) / (spout.end - spout.start)}


def raw_run(model: Path, x: np.ndarray, max_batch: int, providers: tuple[str, ...]) -> dict[str, float]:
    """The same readings through ``InferenceSession.run`` in batches of ``max_batch``: readings/s."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = Config()["topology.inference.intra_op_threads"]
    options.inter_op_num_threads = Config()["topology.inference.inter_op_threads"]
    session = ort.InferenceSession(str(model), options, providers=list(providers))
    batches = [x[i:i + max_batch] for i in range(0, len(x), max_batch)]
    session.run(["score"], {"readings": batches[0]})  # warm up, as the bolt's load does not
    start = time.perf_counter()
    for batch in batches:
        session.run(["score"], {"readings": batch})
    return {"per_s": len(x) / (time.perf_counter() - start)}


def devices() -> dict[str, tuple[str, ...]]:
    import onnxruntime as ort

    found = {"cpu": CPU}
    if "CUDAExecutionProvider" in ort.get_available_providers():
        found["gpu"] = GPU
    else:
        print("(gpu rows skipped: onnxruntime has no CUDAExecutionProvider here; it needs onnxruntime-gpu and a "
              "CUDA GPU)")
    return found


def measure(model: Path, readings: int, runs: int, rate: float, paced_seconds: float) -> dict[str, dict]:
    """{device: {max_batch: {scenario: [one dict per run]}}}, scenarios interleaved run by run."""
    x, data = rows(max(readings, paced_count(rate, paced_seconds)))
    x, data, paced = x[:readings], data[:readings], data[:paced_count(rate, paced_seconds)]
    found = devices()
    results: dict[str, dict] = {d: {b: {"saturated": [], "paced": [], "raw": []} for b in BATCHES} for d in found}
    results["pipeline"] = {"runs": []}
    for _ in range(runs):
        results["pipeline"]["runs"].append(pipeline_run(data))
        for device, providers in found.items():
            for b in BATCHES:
                row = results[device][b]
                row["raw"].append(raw_run(model, x, b, providers))
                row["saturated"].append(bolt_run(model, data, b, providers))
                row["paced"].append(bolt_run(model, paced, b, providers, rate))
    return results


def paced_count(rate: float, seconds: float) -> int:
    return max(1, int(rate * seconds))


def medians(runs: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["runs"] = runs
    return out


def summarise(results: dict[str, dict]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    pipeline = medians(results.pop("pipeline")["runs"])
    for device, by_batch in results.items():
        rows_out = {b: {s: medians(r) for s, r in scenarios.items()} for b, scenarios in by_batch.items()}
        base = rows_out[BATCHES[0]]["saturated"]["per_s"]
        for row in rows_out.values():
            row["vs_batch_1"] = row["saturated"]["per_s"] / base
            row["vs_raw"] = row["saturated"]["per_s"] / row["raw"]["per_s"]
            row["vs_pipeline"] = row["saturated"]["per_s"] / pipeline["per_s"]
            # What the model bolt costs per reading beyond the engine's pipeline and the model call.
            row["bolt_us"] = (1 / row["saturated"]["per_s"] - 1 / pipeline["per_s"] - 1 / row["raw"]["per_s"]) * 1e6
        batch, ref, minimum = TARGET
        value = rows_out[batch]["saturated"]["per_s"] / rows_out[ref]["saturated"]["per_s"]
        table[device] = {"pipeline_per_s": pipeline["per_s"], "by_max_batch": {str(b): r for b, r in rows_out.items()},
                         "target": {"name": f"max_batch {batch} / max_batch {ref}", "value": value,
                                    "target": minimum, "met": value >= minimum}}
    return table


def print_table(table: dict[str, Any], readings: int, runs: int, rate: float, paced_n: int) -> None:
    print(f"\nmodel inference: OnnxBolt, anomaly MLP (4-32-32-1, ONNX), 1 intra-op thread, max_wait "
          f"{MAX_WAIT * 1000:g} ms; local mode, acked; medians of {runs} runs")
    print(f"saturated: {readings:,} readings, max_spout_pending 1000; paced: {paced_n:,} readings at {rate:,.0f}/s; "
          f"raw: InferenceSession.run on batches of max_batch rows")
    print(f"{'device':<6} {'max_batch':>9} {'readings/s':>11} {'vs mb 1':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'batch':>6} {'batch ms':>9} {'raw/s':>11} {'vs raw':>7} {'vs pipe':>8} {'bolt us':>8} "
          f"{'paced p50':>10} {'paced p99':>10} {'batch':>6}")
    for device, t in table.items():
        for b, row in t["by_max_batch"].items():
            s, p, r = row["saturated"], row["paced"], row["raw"]
            print(f"{device:<6} {b:>9} {s['per_s']:>11,.0f} {row['vs_batch_1']:>7.2f}x {s['p50_ms']:>8.2f} "
                  f"{s['p99_ms']:>8.2f} {s['batch_mean']:>6.1f} {s['inference_ms_p50']:>9.3f} {r['per_s']:>11,.0f} "
                  f"{row['vs_raw']:>6.3f}x {row['vs_pipeline']:>7.2f}x {row['bolt_us']:>8.2f} "
                  f"{p['p50_ms']:>10.2f} {p['p99_ms']:>10.2f} {p['batch_mean']:>6.1f}")
        print(f"{device:<6} pipeline without a model (a bolt emitting one tuple per reading): "
              f"{t['pipeline_per_s']:,.0f} readings/s; 'vs pipe' is a row over it, 'bolt us' what the model "
              f"bolt adds per reading beyond it and the model call (raw)")
    for device, t in table.items():
        target = t["target"]
        print(f"target ({device}): {target['name']} saturated readings/s {target['value']:.2f}x, "
              f">= {target['target']:.1f}x: {'met' if target['met'] else 'NOT met'}")


def inference(readings: int = 20_000, runs: int = 3, rate: float = 1000, paced_seconds: float = 2) -> dict[str, Any]:
    """Measure, print the table and return every figure."""
    from streamgale.dev.models import train_anomaly_mlp

    with tempfile.TemporaryDirectory() as d:
        model = train_anomaly_mlp(Path(d) / "anomaly.onnx", hidden=(32, 32), samples=4000)
        table = summarise(measure(model, readings, runs, rate, paced_seconds))
    paced_n = paced_count(rate, paced_seconds)
    print_table(table, readings, runs, rate, paced_n)
    return {"readings": readings, "runs": runs, "max_wait_s": MAX_WAIT,
            "paced": {"rate": rate, "readings": paced_n}, "devices": table}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=20_000, help="readings of each saturated run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000, help="readings/s of the paced runs")
    ap.add_argument("--paced-seconds", type=float, default=2, help="how long each paced run emits")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    figures = inference(args.readings, args.runs, args.rate, args.paced_seconds)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
