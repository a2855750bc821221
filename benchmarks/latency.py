"""Complete latency of acked word count on a 2-worker cluster, at fixed spout rates.

Run alone: ``python -m benchmarks.latency [--seconds S] [--max-rate R]`` (starts
its own cluster; without --max-rate it measures the unpaced acked rate first).

The topology is ``topologies/latency_word_count.py``: 2 paced spout tasks emit
sentences with message ids; each task records, per sentence, the time from emit
to ack (time.perf_counter) and writes the latencies to its own file. Only
sentences emitted inside the measuring window count: it opens once both spout
tasks have been acking for a while and lasts ``seconds``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .cluster import BenchCluster

TOPOLOGY = Path(__file__).resolve().parent / "topologies" / "latency_word_count.py"
NAME = "bench-latency"
SPOUT_TASKS = 2
SETTLE = 2.0   # seconds of steady acking before the window opens
GRACE = 2.0    # seconds after the window for its last sentences to be acked




def _progress(out: Path) -> dict[str, list[tuple[float, int, int, int]]]:
    """Per spout task file: [(time, acked, failed, emitted), ...]."""
    result = {}
    for f in out.glob("progress-*.txt"):
        rows = [line.split() for line in _lines(f)]
        result[f.name] = [(float(t), int(a), int(fl), int(e)) for t, a, fl, e in rows]
    return result


def _lines(f: Path) -> list[str]:
    """The complete lines of a file another process may be appending to."""
    return f.read_text().split("\n")[:-1]


def _acking(out: Path) -> bool:
    """Both spout tasks have written progress showing acks."""
    tasks = {name.split("-")[1] for name, rows in _progress(out).items() if rows and rows[-1][1] > 0}
    return len(tasks) >= SPOUT_TASKS


def _run(cluster: BenchCluster, rate: float, seconds: float, record: bool,
         extra: tuple[str, ...] = ()) -> tuple[Path, float, float]:
    """Submit at ``rate`` (0: unpaced), wait for steady acking, hold a window of
    ``seconds``; kill the topology (its spouts flush in close) and return (out, t0, t1)."""
    out = cluster.dir / f"latency-{time.monotonic_ns()}"
    out.mkdir()
    cluster.cli("submit", str(TOPOLOGY), "-c", "topology.workers=2", "-c", f"bench.output_dir={out}",
                "-c", f"bench.rate={rate}", "-c", f"bench.record_latency={str(record).lower()}", *extra)
    try:
        cluster.wait(lambda: _acking(out), 120, "both spout tasks to ack")
        time.sleep(SETTLE)
        t0 = time.time()
        time.sleep(seconds)
        t1 = time.time()
        time.sleep(GRACE)
    finally:
        cluster.cli("kill", NAME, "-w", "0")
        cluster.wait_gone(NAME)
    return out, t0, t1


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def max_acked_rate(cluster: BenchCluster, seconds: float = 10) -> float:
    """Acked sentences per second of the latency topology with unpaced spouts (2 workers)."""
    out, t0, t1 = _run(cluster, 0, seconds, record=False)
    total = 0.0
    for rows in _progress(out).values():
        window = [r for r in rows if t0 <= r[0] <= t1]
        if len(window) >= 2:
            (ta, a, _, _), (tb, b, _, _) = window[0], window[-1]
            total += (b - a) / (tb - ta)
    return total


def complete_latency(cluster: BenchCluster, max_rate: float, fractions=(0.1, 0.5, 0.9),
                     seconds: float = 10, config: tuple[str, ...] = ()) -> dict[float, dict]:
    """Per fraction of ``max_rate`` (sentences/s, all spout tasks together): the complete
    latency of the sentences emitted during a ``seconds`` window, in ms.

    Returns {fraction: {"rate": target sentences/s, "p50_ms", "p99_ms", "p999_ms",
    "count": sentences acked, "acked_rate": count / window, "failed": fails in the run}}.
    """
    results = {}
    for fraction in fractions:
        rate = fraction * max_rate
        extra = tuple(arg for kv in config for arg in ("-c", kv))
        out, t0, t1 = _run(cluster, rate, seconds, record=True, extra=extra)
        latencies = []
        for f in out.glob("latency-*.txt"):
            for line in _lines(f):
                sent, ms = line.split()
                if t0 <= float(sent) <= t1:
                    latencies.append(float(ms))
        latencies.sort()
        failed = sum(rows[-1][2] for rows in _progress(out).values() if rows)
        results[fraction] = {
            "rate": rate, "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "p999_ms": percentile(latencies, 99.9), "count": len(latencies),
            "acked_rate": len(latencies) / (t1 - t0), "failed": failed,
        }
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.latency")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--max-rate", type=float, help="sentences/s; measured (unpaced, acked) if omitted")
    ap.add_argument("--fractions", default="0.1,0.5,0.9")
    args = ap.parse_args(argv)
    fractions = tuple(float(f) for f in args.fractions.split(","))
    with BenchCluster(supervisors=2, slots=2) as cluster:
        max_rate = args.max_rate or max_acked_rate(cluster, args.seconds)
        print(f"max acked rate: {max_rate:,.0f} sentences/s (2 workers)")
        results = complete_latency(cluster, max_rate, fractions, args.seconds)
    print(f"{'fraction':>8} {'rate/s':>8} {'acked/s':>8} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'p99.9 ms':>9} {'failed':>6}")
    for fraction, r in results.items():
        print(f"{fraction:>8.2f} {r['rate']:>8,.0f} {r['acked_rate']:>8,.0f} {r['count']:>7} "
              f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['p999_ms']:>9.2f} {r['failed']:>6}")


if __name__ == "__main__":
    main()
