"""Topology metrics in nimbus: cumulative counters from workers -> windowed stats.

Pure and in memory (lost on nimbus failover, like Storm's). Supervisors push
each worker's latest snapshot every few seconds; a snapshot holds, per task,
counters that only grow during one worker process's life (they restart at 0
when the worker restarts). For every task this store keeps a running total
across worker restarts and checkpoints of that total over time, thinned out as
they age (every push for 10 minutes, every minute for 3 hours, every 10 minutes
for a day), so a window's value is ``total now - total at the window's start``.

:meth:`MetricsStore.stats` returns, for windows of 10 minutes, 3 hours, 1 day
and all time (keys "600", "10800", "86400", "all")::

    {"windows": ["600", "10800", "86400", "all"],
     "components": {name: {"kind": "spout" | "bolt" | "acker", "tasks": [ids],
                           "queue": current input queue depth (sum),
                           "windows": {w: COUNTS}}},
     "tasks": {"<id>": {"component", "host", "port", "queue", "windows": {w: COUNTS}}},
     "streams": {component: {stream: {w: emitted}}},
     "workers": [{"host", "port", "pid", "cpu_percent", "rss_mb", "uptime_s", "age_s",
                  "transport": {"received", "sent", "dropped_frames", "dropped_entries"}}]}

    COUNTS = {"emitted", "transferred", "executed", "acked", "failed",
              "execute_latency_ms", "capacity", "complete_latency_ms", "malformed"?}

``malformed`` (ackers, only when non-zero) counts ack messages dropped as malformed.

``capacity`` is the share of the window a bolt task spent in ``process``
(averaged over tasks for a component; near 1 means it is the bottleneck);
``execute_latency_ms`` is the mean time in ``process`` per tuple;
``complete_latency_ms`` (spouts) the mean time from emit to full ack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WINDOWS: tuple[tuple[str, float | None], ...] = (("600", 600.0), ("10800", 10800.0), ("86400", 86400.0),
                                                ("all", None))
# What the runtime reports of every task; anything else a task reports is its component's own.
RUNTIME_KEYS = frozenset({"component", "kind", "queue", "emitted_by_stream", "transferred_by_stream", "executed",
                          "acked", "failed", "busy", "latency_total", "pending", "malformed"})
COUNTERS = ("emitted", "transferred", "executed", "acked", "failed", "busy", "latency_total", "malformed")
# Checkpoint spacing by age: (younger than, keep one per) seconds.
THINNING = ((600.0, 0.0), (10800.0, 60.0), (86400.0, 600.0))
STALE_WORKER = 30.0  # a worker report older than this is dropped from "workers"


@dataclass
class TaskSeries:
    component: str
    kind: str
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    streams: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)  # the latest raw counters of the current process
    last_streams: dict[str, float] = field(default_factory=dict)
    pid: int = 0
    checkpoints: list[tuple[float, dict[str, float], dict[str, float]]] = field(default_factory=list)
    queue: int = 0
    host: str = ""
    port: int = 0
    first_seen: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)  # the component's own (counters()), latest values

    def add(self, now: float, pid: int, raw: Mapping[str, Any]) -> None:
        counts = {k: float(raw.get(k, 0) or 0) for k in COUNTERS}
        emitted = {str(s): float(v) for s, v in (raw.get("emitted_by_stream") or {}).items()}
        counts["emitted"] = sum(emitted.values())
        counts["transferred"] = float(sum((raw.get("transferred_by_stream") or {}).values()))
        restarted = pid != self.pid or any(counts[k] < self.last.get(k, 0.0) for k in COUNTERS)
        base = {} if restarted else self.last
        for k in COUNTERS:
            self.totals[k] += counts[k] - base.get(k, 0.0)
        base_streams = {} if restarted else self.last_streams
        for s, v in emitted.items():
            self.streams[s] = self.streams.get(s, 0.0) + v - base_streams.get(s, 0.0)
        self.last, self.last_streams = counts, emitted
        self.pid = pid
        self.queue = int(raw.get("queue", 0) or 0)
        self.metrics = {str(k): v for k, v in raw.items()
                        if k not in RUNTIME_KEYS and isinstance(v, (int, float, str, bool))}
        if not self.first_seen:
            self.first_seen = now
        self.checkpoints.append((now, dict(self.totals), dict(self.streams)))
        self._thin(now)

    def _thin(self, now: float) -> None:
        kept: list[tuple[float, dict[str, float], dict[str, float]]] = []
        for cp in self.checkpoints:
            age = now - cp[0]
            if age > THINNING[-1][0] + 600:
                continue
            spacing = next((gap for limit, gap in THINNING if age < limit), THINNING[-1][1])
            if kept and spacing and cp[0] - kept[-1][0] < spacing and cp is not self.checkpoints[-1]:
                continue
            kept.append(cp)
        self.checkpoints = kept

    def window(self, now: float, seconds: float | None) -> tuple[dict[str, float], dict[str, float], float]:
        """(counter deltas, stream deltas, covered seconds) over the window."""
        if seconds is None or not self.checkpoints:
            return dict(self.totals), dict(self.streams), max(now - self.first_seen, 1e-9)
        start = now - seconds
        base = None
        for cp in self.checkpoints:
            if cp[0] <= start:
                base = cp
            else:
                break
        if base is None:  # younger than the window: everything counts
            return dict(self.totals), dict(self.streams), max(now - self.first_seen, 1e-9)
        deltas = {k: self.totals[k] - base[1].get(k, 0.0) for k in COUNTERS}
        streams = {s: v - base[2].get(s, 0.0) for s, v in self.streams.items()}
        return deltas, streams, seconds


def _derived(c: Mapping[str, float], covered: float, tasks: int) -> dict[str, Any]:
    out: dict[str, Any] = {k: int(c.get(k, 0)) for k in ("emitted", "transferred", "executed", "acked", "failed")}
    executed = c.get("executed", 0.0)
    acked = c.get("acked", 0.0)
    out["execute_latency_ms"] = round(c.get("busy", 0.0) / executed * 1000, 3) if executed else None
    out["capacity"] = round(c.get("busy", 0.0) / (covered * max(tasks, 1)), 3) if executed else None
    lat = c.get("latency_total", 0.0)
    out["complete_latency_ms"] = round(lat / acked * 1000, 3) if lat and acked else None
    if c.get("malformed"):  # the acker's dropped ack messages: shown only when there are some
        out["malformed"] = int(c["malformed"])
    return out


class MetricsStore:
    def __init__(self) -> None:
        self.tasks: dict[str, dict[int, TaskSeries]] = {}  # topology id -> task -> series
        self.workers: dict[str, dict[str, dict[str, Any]]] = {}  # topology id -> slot -> latest worker info

    def add(self, report: Mapping[str, Any], now: float) -> None:
        """One worker's snapshot: {"topology_id", "slot", "host", "port", "pid", "uptime_s",
        "cpu_percent", "rss_mb", "tasks": {task: {"component", "kind", counters...}}}."""
        tid = str(report["topology_id"])
        pid = int(report["pid"])
        series = self.tasks.setdefault(tid, {})
        for task, raw in dict(report.get("tasks") or {}).items():
            task = int(task)
            s = series.get(task)
            if s is None:
                s = series[task] = TaskSeries(str(raw.get("component", "?")), str(raw.get("kind", "?")))
            s.host, s.port = str(report.get("host", "")), int(report.get("port", 0))
            s.add(now, pid, raw)
        self.workers.setdefault(tid, {})[str(report["slot"])] = {
            "host": report.get("host"), "port": report.get("port"), "pid": pid,
            "cpu_percent": report.get("cpu_percent"), "rss_mb": report.get("rss_mb"),
            "uptime_s": report.get("uptime_s"), "received": now,
            "transport": {k: int(v) for k, v in dict(report.get("transport") or {}).items()}}

    def forget(self, topology_id: str) -> None:
        self.tasks.pop(topology_id, None)
        self.workers.pop(topology_id, None)

    def stats(self, topology_id: str, now: float) -> dict[str, Any]:
        series = self.tasks.get(topology_id, {})
        components: dict[str, dict[str, Any]] = {}
        tasks_out: dict[str, Any] = {}
        streams: dict[str, dict[str, dict[str, int]]] = {}
        sums: dict[tuple[str, str], dict[str, float]] = {}
        covered_by: dict[tuple[str, str], float] = {}
        for task, s in sorted(series.items()):
            comp = components.setdefault(s.component, {"kind": s.kind, "tasks": [], "queue": 0, "windows": {}})
            comp["tasks"].append(task)
            comp["queue"] += s.queue
            t_windows = {}
            for name, seconds in WINDOWS:
                deltas, sdeltas, covered = s.window(now, seconds)
                t_windows[name] = _derived(deltas, covered, 1)
                acc = sums.setdefault((s.component, name), dict.fromkeys(COUNTERS, 0.0))
                for k in COUNTERS:
                    acc[k] += deltas[k]
                covered_by[(s.component, name)] = max(covered_by.get((s.component, name), 0.0), covered)
                for stream, v in sdeltas.items():
                    streams.setdefault(s.component, {}).setdefault(stream, {})
                    streams[s.component][stream][name] = streams[s.component][stream].get(name, 0) + int(v)
            tasks_out[str(task)] = {"component": s.component, "host": s.host, "port": s.port, "queue": s.queue,
                                    "windows": t_windows, "metrics": dict(s.metrics)}
        for (component, name), acc in sums.items():
            comp = components[component]
            comp["windows"][name] = _derived(acc, covered_by[(component, name)], len(comp["tasks"]))
        workers = [{k: v for k, v in w.items() if k != "received"} | {"age_s": round(now - w["received"], 1)}
                   for w in self.workers.get(topology_id, {}).values() if now - w["received"] <= STALE_WORKER]
        return {"windows": [name for name, _ in WINDOWS], "components": components, "tasks": tasks_out,
                "streams": streams, "workers": sorted(workers, key=lambda w: (str(w["host"]), w["port"] or 0))}
