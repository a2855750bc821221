"""Worker memory: idle, and under overload (a fast spout into a bolt 100x slower).

Run alone: ``python -m benchmarks.memory [--seconds S] [--slow-ms MS] [--acked]``
(starts its own cluster). Topologies: ``topologies/memory.py``, 2 workers.
RSS is sampled with psutil from the worker processes of the cluster
(``streamgale.worker`` processes with a path under the cluster's directory).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .cluster import BenchCluster

TOPOLOGY = Path(__file__).resolve().parent / "topologies" / "memory.py"
MB = 2**20






def _submit(cluster: BenchCluster, mode: str, *conf: str) -> Path:
    out = cluster.dir / f"memory-{mode}-{time.monotonic_ns()}"
    out.mkdir()
    args = ["submit", str(TOPOLOGY), "-c", "topology.workers=2", "-c", f"bench.output_dir={out}",
            "-c", f"bench.mode={mode}"]
    for c in conf:
        args += ["-c", c]
    cluster.cli(*args)
    return out


def _pids(out: Path, kind: str) -> set[int]:
    return {int(f.stem.split("-")[2]) for f in out.glob(f"{kind}-*.txt")}


def _kill(cluster: BenchCluster, name: str) -> None:
    cluster.cli("kill", name, "-w", "0")
    cluster.wait_gone(name)


def idle_worker_rss(cluster: BenchCluster) -> float:
    """MB: the largest RSS among the 2 workers of a topology that emits nothing,
    3 s after all its tasks have started."""
    out = _submit(cluster, "idle")
    try:
        cluster.wait(lambda: len(list(out.glob("ready-*.txt"))) == 4 and len(_pids(out, "ready")) == 2
                     and len(cluster.worker_processes()) == 2, 120, "the idle topology's 2 workers")
        time.sleep(3)
        return max(p.memory_info().rss for p in cluster.worker_processes()) / MB
    finally:
        _kill(cluster, "bench-idle")


def _read_numbers(out: Path, kind: str) -> list[int]:
    """Sum, field by field, of the numbers in the ``kind`` progress files."""
    total: list[int] = []
    for f in out.glob(f"{kind}-*.txt"):
        values = [int(v) for v in f.read_text().split()]
        total = [a + b for a, b in zip(total, values)] if total else values
    return total


def overload_rss(cluster: BenchCluster, seconds: float = 60, slow_ms: float = 1.0,
                 acked: bool = False) -> dict:
    """A spout emitting as fast as it may (with message ids if ``acked``) into a
    bolt sleeping ``slow_ms`` per tuple, on 2 workers, for ``seconds``; worker RSS
    sampled every second from when the bolt is processing.

    Returns {"start_mb", "end_mb", "max_mb": total RSS of the workers at the first
    sample, at the last, and its maximum; "quarter_mb": at a quarter of the run (after
    the buffers have filled: end_mb - quarter_mb is the growth); "workers": {"<role> <pid>": {"start_mb",
    "end_mb", "max_mb"}} (role: the components it runs); "processed": tuples the
    bolt finished; "emitted", "acked", "failed": the spout's counts (as of its last
    next_tuple call: a throttled spout is not called); "seconds"}.
    """
    out = _submit(cluster, "overload", f"bench.slow_ms={slow_ms}", f"bench.acked={str(acked).lower()}")
    try:
        cluster.wait(lambda: _read_numbers(out, "slow") and len(cluster.worker_processes()) == 2, 120,
                     "the slow bolt to process")
        workers = cluster.worker_processes()
        fast, slow = _pids(out, "fast"), _pids(out, "slow")
        roles = {p.pid: "+".join(r for r, pids in (("spout", fast), ("bolt", slow)) if p.pid in pids) or "ackers"
                 for p in workers}
        samples: dict[int, list[float]] = {p.pid: [] for p in workers}
        totals: list[float] = []
        start = time.monotonic()
        processed_at_start = _read_numbers(out, "slow")[0]
        while True:
            total = 0.0
            for p in workers:
                rss = p.memory_info().rss / MB  # raises if a worker died: the run is invalid
                samples[p.pid].append(rss)
                total += rss
            totals.append(total)
            if time.monotonic() - start >= seconds:
                break
            time.sleep(1)
        elapsed = time.monotonic() - start
        processed = _read_numbers(out, "slow")[0]
        emitted, acked_n, failed = _read_numbers(out, "fast")
    finally:
        _kill(cluster, "bench-overload")
    return {
        "start_mb": totals[0], "end_mb": totals[-1], "max_mb": max(totals),
        "quarter_mb": totals[len(totals) // 4],
        "workers": {f"{roles[pid]} {pid}": {"start_mb": s[0], "end_mb": s[-1], "max_mb": max(s)}
                    for pid, s in samples.items()},
        "processed": processed, "processed_per_s": (processed - processed_at_start) / elapsed,
        "emitted": emitted, "acked": acked_n, "failed": failed, "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--slow-ms", type=float, default=1.0)
    ap.add_argument("--acked", action="store_true", help="the fast spout emits with message ids")
    args = ap.parse_args(argv)
    with BenchCluster(supervisors=2, slots=2) as cluster:
        print(f"idle worker RSS: {idle_worker_rss(cluster):.1f} MB (max of 2 workers)")
        r = overload_rss(cluster, args.seconds, args.slow_ms, args.acked)
    print(f"overload, {r['seconds']:.0f} s, bolt {args.slow_ms} ms/tuple, "
          f"{'acked' if args.acked else 'unacked'}: total worker RSS start {r['start_mb']:.1f} MB, "
          f"end {r['end_mb']:.1f} MB, max {r['max_mb']:.1f} MB")
    for name, w in r["workers"].items():
        print(f"  worker {name}: start {w['start_mb']:.1f} MB, end {w['end_mb']:.1f} MB, max {w['max_mb']:.1f} MB")
    print(f"  processed {r['processed']:,} ({r['processed_per_s']:,.0f}/s), emitted {r['emitted']:,}, "
          f"acked {r['acked']:,}, failed {r['failed']:,}")


if __name__ == "__main__":
    main()
