"""Multi-lang throughput: a pass-through shell bolt beside the same bolt in Python.

``python -m benchmarks.multilang [--tuples N] [--runs R] [--json FILE]`` (in the suite:
``python -m benchmarks --groups multilang``, option ``--multilang-tuples``).

Local mode, parallelism 1: a spout (``emit_many``, 100 tuples of two fields, an int
and an 11-character string, at a time) -> the pass-through bolt -> a sink bolt.
"acked": every tuple is emitted with a message id and tracked by the acker
end to end (the shell bolt's subprocess acks each input after emitting it,
anchored); "unacked": no message ids. Rates are tuples/s at the sink from its
first tuple to the last (start-up and the JVM or interpreter's own start left
out).

The bolts:

- python: a StreamGale ``Bolt`` that emits its input (the reference);
- bare-json, bare-msgpack: ``benchmarks/multilang/passthrough.py``, the
  protocol by hand, as a library written for speed would speak it (it answers
  everything it read in one write);
- pystorm-json, pystorm-msgpack: ``benchmarks/multilang/pystorm_passthrough.py``,
  pystorm 3.1.4 unchanged (it flushes after every message);

Every row is measured in the same run as the python row, the scenarios
interleaved ``--runs`` times (the machine is shared); figures are medians.
"vs python" is a row's rate over the python row of the same mode. The target:
bare-msgpack at least 50,000 tuples/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from streamgale import Bolt, Config, LocalCluster, Spout, Topology
from streamgale.multilang import ShellBolt

HERE = Path(__file__).resolve().parent
BOLTS = ("python", "bare-json", "bare-msgpack", "pystorm-json", "pystorm-msgpack")
MODES = ("acked", "unacked")
TARGET = ("bare-msgpack", "acked", 50_000.0)
CHUNK = 100


class Numbers(Spout):
    outputs = ["n", "s"]

    def __init__(self, count: int, acked: bool):
        self.count = count
        self.acked = acked

    def open(self, context):
        self.next = 0

    def next_tuple(self):
        if self.next < self.count:
            ids = range(self.next, min(self.count, self.next + CHUNK))
            self.next += len(ids)
            self.emit_many([[i, "hello world"] for i in ids], msg_ids=list(ids) if self.acked else None)


class Passthrough(Bolt):
    outputs = ["n", "s"]

    def process(self, tup):
        self.emit(tup.values)


class Sink(Bolt):
    seen = 0
    first = 0.0
    last = 0.0

    def process(self, tup):
        cls = type(self)
        if not cls.seen:
            cls.first = time.perf_counter()
        cls.seen += 1
        cls.last = time.perf_counter()


def bolt(name: str) -> Bolt:
    if name == "python":
        return Passthrough()
    kind, framing = name.split("-")
    script = "passthrough.py" if kind == "bare" else "pystorm_passthrough.py"
    return ShellBolt(command=[sys.executable, script, framing], framing=framing, outputs=["n", "s"])


def run_once(name: str, mode: str, tuples: int) -> float:
    Sink.seen = 0
    t = Topology("multilang-bench")
    t.spout("numbers", Numbers(tuples, mode == "acked"))
    t.bolt("pass", bolt(name)).shuffle("numbers")
    t.bolt("sink", Sink).shuffle("pass")
    t.base_dir = str(HERE)
    result = LocalCluster(t, Config()).run(until=lambda: Sink.seen >= tuples, duration=300)
    if result.errors or Sink.seen < tuples:
        raise RuntimeError(f"{name} {mode}: {Sink.seen} of {tuples} tuples; errors: {result.errors[:2]}")
    return (Sink.seen - 1) / (Sink.last - Sink.first)


def measure(tuples: int, runs: int, bolts: tuple[str, ...] = BOLTS) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {mode: {b: [] for b in bolts} for mode in MODES}
    for _ in range(runs):
        for mode in MODES:
            for b in bolts:
                results[mode][b].append(run_once(b, mode, tuples))
    return results


def summarise(results: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for mode, rows in results.items():
        reference = statistics.median(rows["python"]) if rows.get("python") else None
        table[mode] = {b: {"median": statistics.median(r), "min": min(r), "max": max(r), "runs": r,
                           "vs_python": statistics.median(r) / reference if reference else None}
                       for b, r in rows.items()}
    name, mode, target = TARGET
    if name in table.get(mode, {}):
        value = table[mode][name]["median"]
        table["target"] = {"row": f"{name} {mode}", "value": value, "target": target, "met": value >= target}
    return table


def print_table(table: dict[str, Any], tuples: int, runs: int) -> None:
    print(f"\nmulti-lang pass-through bolt: {tuples:,} tuples, {runs} runs, local mode (tuples/s)")
    print(f"{'bolt':<17} {'mode':<8} {'median':>9} {'min':>9} {'max':>9} {'vs python':>10}")
    for mode in MODES:
        for b, row in table.get(mode, {}).items():
            vs = f"{row['vs_python']:.2f}x" if row["vs_python"] else ""
            print(f"{b:<17} {mode:<8} {row['median']:>9,.0f} {row['min']:>9,.0f} {row['max']:>9,.0f} {vs:>10}")
    if "target" in table:
        t = table["target"]
        print(f"target: {t['row']} >= {t['target']:,.0f}/s: {t['value']:,.0f} {'met' if t['met'] else 'NOT met'}")


def multilang(tuples: int = 100_000, runs: int = 3) -> dict[str, Any]:
    """Measure, print the table and return every figure."""
    table = summarise(measure(tuples, runs))
    print_table(table, tuples, runs)
    return {"tuples": tuples, "runs": runs, **table}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.multilang", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tuples", type=int, default=100_000, help="tuples of each run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    figures = multilang(args.tuples, args.runs)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
