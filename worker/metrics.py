"""A worker's metrics snapshot: cumulative counters per task, plus the process's CPU and memory.

Counters live on each task's collector (see worker/executor.py) and only grow
during the process's life; nimbus turns them into windows
(streamgale/nimbus/metrics.py). The worker writes the snapshot to a file in
its directory every few seconds; its supervisor forwards it to nimbus.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import msgpack
import psutil

from streamgale.runtime.acker import AckerExecutor
from streamgale.runtime.executor import Executor

METRICS_FILE = "metrics"


def task_counters(executors: Sequence[Executor]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in executors:
        if isinstance(e, AckerExecutor):
            for r in e.runners:
                out[str(r.task)] = {"component": e.component, "kind": "acker", "queue": len(r.queue),
                                    "tracked": len(r.table), "executed": r.executed,  # type: ignore[attr-defined]
                                    "acked": r.acked, "failed": r.failed}  # type: ignore[attr-defined]
            continue
        for r in e.runners:
            c = r.collector
            out[str(r.task)] = {  # str keys: RPC maps take only str keys
                "component": e.component, "kind": e.kind, "queue": len(r.queue),
                "emitted_by_stream": {s: v[0] for s, v in c.counts.items()},
                "transferred_by_stream": {s: v[1] for s, v in c.counts.items()},
                "executed": c.executed, "acked": c.acked, "failed": c.failed,
                "busy": c.busy, "latency_total": c.latency_total, "pending": len(c.pending),
            }
    return out


class MetricsWriter:
    def __init__(self, worker_dir: Path, topology_id: str, slot: str, host: str, port: int):
        self.path = worker_dir / METRICS_FILE
        self.base = {"topology_id": topology_id, "slot": slot, "host": host, "port": port, "pid": os.getpid()}
        self.process = psutil.Process()
        self.process.cpu_percent()  # the first call only starts the measurement
        self.started = time.monotonic()

    def write(self, executors: Sequence[Executor]) -> None:
        report = {**self.base, "time": time.time(), "uptime_s": round(time.monotonic() - self.started, 1),
                  "cpu_percent": self.process.cpu_percent(), "rss_mb": round(self.process.memory_info().rss / 2**20, 1),
                  "tasks": task_counters(executors)}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(msgpack.packb(report, use_bin_type=True))
        os.replace(tmp, self.path)


def read_metrics(worker_dir: Path) -> dict[str, Any] | None:
    try:
        data = msgpack.unpackb((worker_dir / METRICS_FILE).read_bytes(), raw=False, strict_map_key=False)
    except (OSError, ValueError, msgpack.UnpackException):
        return None
    return data if isinstance(data, dict) else None
