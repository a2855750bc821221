"""A real cluster for benchmarks: ZooKeeper, nimbus and supervisors on localhost.

The daemons are started through the CLI, exactly as an operator would
(``streamgale.dev.cluster.ProcessCluster``), in a temporary directory that is
removed afterwards together with every process.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from streamgale.dev.cluster import ProcessCluster

STOP_GRACE = 20.0  # seconds the daemons get to stop their workers before they are killed


class BenchCluster:
    """``settings``: config keys for every daemon and for the benchmark's own CLI calls."""

    def __init__(self, supervisors: int = 2, slots: int = 2, settings: dict | None = None,
                 client_config: Path | None = None):
        self.supervisors, self.slots = supervisors, slots
        self.client_config = client_config  # the CLI's config, if not the daemons' (security on: a user's key)
        self.cluster = ProcessCluster(supervisors=supervisors, slots=slots, logging_level="WARNING",
                                      shutdown_workers=True, temp_prefix="streamgale-bench-", settings=settings)
        self.dir = self.cluster.dir
        self.config_file = self.cluster.config_file

    def __enter__(self) -> BenchCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.cluster.start()

    def cli(self, *args: str) -> str:
        r = self.cluster.cli(*args, timeout=120, config=self.client_config)
        if r.returncode != 0:
            raise RuntimeError(f"streamgale {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def wait(self, condition, timeout: float, what: str):
        """Poll ``condition`` until it returns something truthy (returned), or fail naming ``what``
        (at once if a daemon died)."""
        return self.cluster.wait(condition, timeout=timeout, message=what, interval=0.1)

    def wait_gone(self, name: str, timeout: float = 60) -> None:
        """Until a killed topology's workers have all exited (before the next run starts)."""
        self.wait(lambda: name not in self.cli("list") and not self.worker_processes(), timeout,
                  f"topology {name} to go away")

    def worker_processes(self) -> list[psutil.Process]:
        """This cluster's worker processes."""
        return self.cluster.worker_processes()

    def close(self) -> None:
        self.cluster.close(grace=STOP_GRACE)


TOPOLOGY = Path(__file__).resolve().parent / "topologies" / "cluster_word_count.py"


def cluster_word_count(cluster: BenchCluster, sentences: int, workers: int, acked: bool = False,
                       timeout: float = 600, config: tuple[str, ...] = ()) -> float:
    """Words per second of the cluster word count: first spout emit to last word counted."""
    out = cluster.dir / f"out-{time.monotonic_ns()}"
    out.mkdir()
    cluster.cli("submit", str(TOPOLOGY), "-c", f"topology.workers={workers}",
                "-c", f"bench.sentences={sentences}", "-c", f"bench.output_dir={out}",
                "-c", f"bench.acked={str(acked).lower()}", *(arg for kv in config for arg in ("-c", kv)))
    words = 10 * sentences
    deadline = time.monotonic() + timeout
    try:
        while True:
            progress = [f.read_text().split() for f in out.glob("count-*.txt")]
            if sum(int(p[0]) for p in progress) >= words:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster word count did not finish in {timeout} s; logs in {cluster.dir}")
            time.sleep(0.05)
        start = min(float(f.read_text()) for f in out.glob("start-*.txt"))
        end = max(float(p[1]) for p in progress)
        return words / (end - start)
    finally:
        cluster.cli("kill", "bench-cluster-wc", "-w", "0")
        cluster.wait_gone("bench-cluster-wc")
