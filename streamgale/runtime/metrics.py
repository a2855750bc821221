"""Per-task counters of a running topology, read from the tasks' collectors.

Counters only grow during a process's life; nimbus turns snapshots into
windows (``nimbus/metrics.py``). Reading them from another thread than the
executor loop's is safe: they are plain ints and floats, read without locks
(a snapshot may be a turn old, never torn). A component may report more
through a ``counters()`` method (the acker reports the trees it tracks,
completed and failed, and malformed ack messages).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .executor import Executor


def task_counters(executors: Sequence[Executor]) -> dict[str, dict[str, Any]]:
    """Task id (as str: RPC maps take only str keys) -> its counters."""
    out: dict[str, dict[str, Any]] = {}
    for e in executors:
        for r in e.runners:
            c = r.collector
            counters = {
                "component": e.component, "kind": e.kind, "queue": len(r.queue),
                "emitted_by_stream": {s: v.emitted for s, v in c.counts.items()},
                "transferred_by_stream": {s: v.transferred for s, v in c.counts.items()},
                "executed": c.executed, "acked": c.acked, "failed": c.failed,
                "busy": c.busy, "latency_total": c.latency_total, "pending": len(c.pending),
            }
            if e.kind == "spout":
                counters["failed_early"], counters["late_acks"] = c.failed_early, c.late_acks
            extra = getattr(r.instance, "counters", None)
            if callable(extra):
                try:
                    counters.update(extra())
                except Exception as exc:  # noqa: BLE001 - a component's metrics never stop the heartbeat
                    counters["counters_error"] = f"{type(exc).__name__}: {exc}"[:200]
            out[str(r.task)] = counters
    return out
