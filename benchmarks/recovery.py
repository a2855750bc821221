"""Recovery from a kill -9 of a worker: seconds until its tasks ack again.

Run alone: ``python -m benchmarks.recovery [--rate R] [--runs N]`` (starts its own cluster).

The topology is ``topologies/recovery.py`` (2 workers): a paced spout of unique
message ids -> work (4 tasks) -> done. The work bolt logs (time, task, pid, id)
per tuple, the spout logs (time, id) per ack. Once it runs steadily, the worker
process running some work tasks is killed with SIGKILL; recovery is the time
from the kill to the first ack of a message that one of those tasks processed
in its new process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .cluster import BenchCluster

TOPOLOGY = Path(__file__).resolve().parent / "topologies" / "recovery.py"
NAME = "bench-recovery"
STEADY = 2.0  # seconds of steady running before the kill


def _lines(f: Path) -> list[list[str]]:
    """The complete lines of a file another process may be appending to, split."""
    return [line.split() for line in f.read_text().split("\n")[:-1]]


def _work(out: Path) -> list[tuple[float, int, int, str]]:
    return [(float(t), int(task), int(pid), msg) for f in out.glob("work-*.txt")
            for t, task, pid, msg in _lines(f)]


def _acks(out: Path) -> list[tuple[float, str]]:
    return [(float(t), msg) for f in out.glob("acks-*.txt") for t, msg in _lines(f)]






def recovery_time(cluster: BenchCluster, rate: float = 500) -> float:
    """Seconds from a kill -9 of a worker running work tasks to the first ack of a
    message processed by one of those tasks in the restarted worker."""
    out = cluster.dir / f"recovery-{time.monotonic_ns()}"
    out.mkdir()
    cluster.cli("submit", str(TOPOLOGY), "-c", "topology.workers=2", "-c", f"bench.output_dir={out}",
                "-c", f"bench.rate={rate}")
    try:
        def running():
            work = _work(out)
            pids = {pid for _, _, pid, _ in work}
            tasks = {task for _, task, _, _ in work}
            return len(pids) == 2 and len(tasks) == 4 and len(cluster.worker_processes()) == 2 and _acks(out)
        cluster.wait(running, 120, "the topology to run on 2 workers")
        time.sleep(STEADY)

        workers = {p.pid: p for p in cluster.worker_processes()}
        work = _work(out)
        victim = min(pid for _, _, pid, _ in work if pid in workers)
        tasks = {task for _, task, pid, _ in work if pid == victim}
        at = time.time()
        workers[victim].kill()

        def recovered():
            again = {msg for t, task, pid, msg in _work(out) if task in tasks and pid != victim and t > at}
            acked = [t for t, msg in _acks(out) if t > at and msg in again]
            return min(acked) if acked else None
        return cluster.wait(recovered, 120, "the killed worker's tasks to ack again") - at
    finally:
        cluster.cli("kill", NAME, "-w", "0")
        cluster.wait_gone(NAME)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.recovery")
    ap.add_argument("--rate", type=float, default=500, help="messages/s over both spout tasks")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args(argv)
    with BenchCluster(supervisors=2, slots=2) as cluster:
        for _ in range(args.runs):
            print(f"recovery after kill -9 of a worker at {args.rate:,.0f} msg/s: "
                  f"{recovery_time(cluster, args.rate):.2f} s")


if __name__ == "__main__":
    main()
