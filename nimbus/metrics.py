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
     "executors": [{"component", "tasks": [ids], "windows": {w: COUNTS}}],   (when nimbus passes them)
     "totals": {w: {"emitted", "transferred", "acked", "failed", "complete_latency_ms"}},  (the topology's)
     "streams": {component: {stream: {w: emitted}}},
     "workers": [{"host", "port", "pid", "cpu_percent", "rss_mb", "uptime_s", "age_s",
                  "transport": {"received", "sent", "dropped_frames", "dropped_entries", "denied_keys"}}],
     "bad_input": {"dropped_frames", "dropped_entries", "denied_keys"}}

    COUNTS = {"emitted", "transferred", "executed", "acked", "failed",
              "execute_latency_ms", "capacity", "complete_latency_ms", "malformed"?,
              "failed_early"?, "late_acks"?}

``malformed`` (ackers, only when non-zero) counts ack messages dropped as malformed.
``failed_early`` (spouts, only when non-zero) counts trees failed at once because a worker of
the topology was lost (docs/reliability.md); ``late_acks`` the trees that completed after they
were failed (by that or by the message timeout): each is a duplicate the spout replayed.
``bad_input`` sums, over the topology's life and across worker restarts, what its workers
refused on their ports: malformed frames and tuple entries dropped, and peers whose key was
denied (security on).

A snapshot is checked whole before any of it is kept (:class:`MalformedReport` names the
field at fault): what a supervisor forwards never leaves the store unable to answer.

``capacity`` is the share of the window a bolt task spent in ``process``
(averaged over tasks for a component; near 1 means it is the bottleneck);
``execute_latency_ms`` is the mean time in ``process`` per tuple;
``complete_latency_ms`` (spouts) the mean time from emit to full ack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamgale.wire.protocol import STATS_WINDOWS

WINDOWS = STATS_WINDOWS
# What the runtime reports of every task; anything else a task reports is its component's own.
RUNTIME_KEYS = frozenset({"component", "kind", "queue", "emitted_by_stream", "transferred_by_stream", "executed",
                          "acked", "failed", "busy", "latency_total", "pending", "malformed", "failed_early",
                          "late_acks"})
COUNTERS = ("emitted", "transferred", "executed", "acked", "failed", "busy", "latency_total", "malformed",
            "failed_early", "late_acks")
# Checkpoint spacing by age: (younger than, keep one per) seconds.
THINNING = ((600.0, 0.0), (10800.0, 60.0), (86400.0, 600.0))
STALE_WORKER = 30.0  # a worker report older than this is dropped from "workers"
BAD_INPUT = ("dropped_frames", "dropped_entries", "denied_keys")  # a worker's transport counters of bad input
MAX_COUNT = float(1 << 63)  # counters and metric values beyond int64 are not what a worker sends


class MalformedReport(ValueError):
    """A worker's metrics snapshot is not shaped as ``streamgale/runtime/metrics.py`` sends it."""


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _count(v: Any, what: str) -> float:
    """A counter: a finite number >= 0 (absent: 0)."""
    if v is None:
        return 0.0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < MAX_COUNT:
        raise MalformedReport(f"{what} must be a finite number >= 0, got {_show(v)}")
    return float(v)


def _gauge(v: Any, what: str) -> float | None:
    return None if v is None else _count(v, what)


def _map(v: Any, what: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
        raise MalformedReport(f"{what} must be a map with string keys, got {type(v).__name__}")
    return dict(v)


def _text(v: Any, what: str, default: str | None = None) -> str:
    if v is None and default is not None:
        return default
    if not isinstance(v, str):
        raise MalformedReport(f"{what} must be a string, got {_show(v)}")
    return v


def _whole(v: Any, what: str, low: int = 0, high: int = 1 << 63) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v < high:
        raise MalformedReport(f"{what} must be an integer in [{low}, {high}), got {_show(v)}")
    return v


def _own_metric(v: Any) -> bool:
    """A component's own value worth showing (finite, int64, short text)."""
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, int):
        return -MAX_COUNT <= v < MAX_COUNT
    return isinstance(v, str) and len(v) <= 200


def _checked_task(task: str, raw: Any) -> tuple[int, dict[str, Any]]:
    """(task id, its counters as :meth:`TaskSeries.add` reads them), or MalformedReport."""
    if not task.isdigit() or len(task) > 9:
        raise MalformedReport(f"task id {_show(task)} is not a non-negative integer")
    where = f"task {task}"
    raw = _map(raw, where)
    out: dict[str, Any] = {k: _count(raw.get(k), f"{where}: '{k}'") for k in COUNTERS
                           if k not in ("emitted", "transferred")}
    for k in ("emitted_by_stream", "transferred_by_stream"):
        out[k] = {s: _count(v, f"{where}: '{k}' of stream {_show(s)}") for s, v in _map(raw.get(k), where).items()}
    out["queue"] = int(_count(raw.get("queue"), f"{where}: 'queue'"))
    out["component"] = _text(raw.get("component"), f"{where}: 'component'", "?")
    out["kind"] = _text(raw.get("kind"), f"{where}: 'kind'", "?")
    out.update((k, v) for k, v in raw.items() if k not in RUNTIME_KEYS and _own_metric(v))
    return int(task), out


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
        """``raw``: one task's counters as :func:`_checked_task` returns them."""
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
        self.metrics = {str(k): v for k, v in raw.items() if k not in RUNTIME_KEYS and _own_metric(v)}
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
    for k in ("failed_early", "late_acks"):  # spouts, after a worker was lost: shown only when there are some
        if c.get(k):
            out[k] = int(c[k])
    return out


def _topology_windows(sums: Mapping[tuple[Any, str], Mapping[str, float]],
                      covered_by: Mapping[tuple[Any, str], float]) -> dict[str, dict[str, Any]]:
    """Storm UI's topology stats per window: tuples emitted and transferred by every component
    (not the system ones), and the trees acked and failed and their complete latency, which are
    the spouts'."""
    out = {}
    for name, _ in WINDOWS:
        spouts = sums.get((("topology", "spout"), name)) or dict.fromkeys(COUNTERS, 0.0)
        others = sums.get((("topology", "other"), name)) or dict.fromkeys(COUNTERS, 0.0)
        both = {k: spouts[k] + others[k] for k in ("emitted", "transferred")}
        counts = {**both, "acked": spouts["acked"], "failed": spouts["failed"],
                  "latency_total": spouts["latency_total"]}
        covered = max(covered_by.get((("topology", part), name), 0.0) for part in ("spout", "other"))
        derived = _derived(counts, covered, 1)
        out[name] = {k: derived[k] for k in ("emitted", "transferred", "acked", "failed", "complete_latency_ms")}
    return out


class MetricsStore:
    def __init__(self) -> None:
        self.tasks: dict[str, dict[int, TaskSeries]] = {}  # topology id -> task -> series
        self.workers: dict[str, dict[str, dict[str, Any]]] = {}  # topology id -> slot -> latest worker info
        self.bad_input: dict[str, dict[str, int]] = {}  # topology id -> BAD_INPUT totals across restarts

    def add(self, report: Mapping[str, Any], now: float) -> None:
        """One worker's snapshot: {"topology_id", "slot", "host", "port", "pid", "uptime_s",
        "cpu_percent", "rss_mb", "transport": {counter: int}, "tasks": {task: {"component", "kind",
        counters...}}}. Raises :class:`MalformedReport`, keeping nothing of it, if it is not."""
        report = _map(report, "a worker's metrics report")
        tid = _text(report.get("topology_id"), "'topology_id'")
        slot = _text(report.get("slot"), "'slot'")
        pid = _whole(report.get("pid"), "'pid'")
        host = _text(report.get("host"), "'host'", "")
        port = _whole(report.get("port", 0), "'port'", 0, 65536)
        gauges = {k: _gauge(report.get(k), f"'{k}'") for k in ("cpu_percent", "rss_mb", "uptime_s")}
        transport = {k: int(_count(v, f"transport counter {_show(k)}"))
                     for k, v in _map(report.get("transport"), "'transport'").items()}
        tasks = [_checked_task(t, raw) for t, raw in _map(report.get("tasks"), "'tasks'").items()]
        # Checked: from here on nothing raises.
        series = self.tasks.setdefault(tid, {})
        for task, raw in tasks:
            s = series.get(task)
            if s is None:
                s = series[task] = TaskSeries(raw["component"], raw["kind"])
            s.host, s.port = host, port
            s.add(now, pid, raw)
        workers = self.workers.setdefault(tid, {})
        self._count_bad_input(tid, workers.get(slot), pid, transport)
        workers[slot] = {"host": host, "port": port, "pid": pid, **gauges, "received": now, "transport": transport}

    def _count_bad_input(self, tid: str, before: Mapping[str, Any] | None, pid: int,
                         transport: Mapping[str, int]) -> None:
        """Add what a worker refused since its previous snapshot (all of it if it restarted)."""
        last = before["transport"] if before is not None and before["pid"] == pid else {}
        if any(transport.get(k, 0) < last.get(k, 0) for k in BAD_INPUT):
            last = {}  # counters went back: a new process on the same pid
        totals = self.bad_input.setdefault(tid, dict.fromkeys(BAD_INPUT, 0))
        for k in BAD_INPUT:
            totals[k] += transport.get(k, 0) - last.get(k, 0)

    def forget(self, topology_id: str) -> None:
        self.tasks.pop(topology_id, None)
        self.workers.pop(topology_id, None)
        self.bad_input.pop(topology_id, None)

    def stats(self, topology_id: str, now: float,
              executors: Sequence[tuple[str, Sequence[int]]] = ()) -> dict[str, Any]:
        """The topology's windowed stats (the shape in this module's docstring). ``executors``: its
        executors now (component, tasks), for ``executors`` in the answer: each one's counts,
        summed over its tasks as a component's are."""
        series = self.tasks.get(topology_id, {})
        components: dict[str, dict[str, Any]] = {}
        tasks_out: dict[str, Any] = {}
        streams: dict[str, dict[str, dict[str, int]]] = {}
        group_of = {t: i for i, (_, ts) in enumerate(executors) for t in ts}
        # (component | executor index | topology part, window) -> summed deltas, and the longest covered time
        sums: dict[tuple[Any, str], dict[str, float]] = {}
        covered_by: dict[tuple[Any, str], float] = {}
        for task, s in sorted(series.items()):
            comp = components.setdefault(s.component, {"kind": s.kind, "tasks": [], "queue": 0, "windows": {}})
            comp["tasks"].append(task)
            comp["queue"] += s.queue
            keys: list[Any] = [s.component] + ([("executor", group_of[task])] if task in group_of else [])
            if not s.component.startswith("__"):  # the topology's own totals leave the system components out
                keys.append(("topology", "spout" if s.kind == "spout" else "other"))
            t_windows = {}
            for name, seconds in WINDOWS:
                deltas, sdeltas, covered = s.window(now, seconds)
                t_windows[name] = _derived(deltas, covered, 1)
                for key in keys:
                    acc = sums.setdefault((key, name), dict.fromkeys(COUNTERS, 0.0))
                    for k in COUNTERS:
                        acc[k] += deltas[k]
                    covered_by[(key, name)] = max(covered_by.get((key, name), 0.0), covered)
                for stream, v in sdeltas.items():
                    streams.setdefault(s.component, {}).setdefault(stream, {})
                    streams[s.component][stream][name] = streams[s.component][stream].get(name, 0) + int(v)
            tasks_out[str(task)] = {"component": s.component, "host": s.host, "port": s.port, "queue": s.queue,
                                    "windows": t_windows, "metrics": dict(s.metrics)}
        for (key, name), acc in sums.items():
            if isinstance(key, str):
                comp = components[key]
                comp["windows"][name] = _derived(acc, covered_by[(key, name)], len(comp["tasks"]))
        executors_out = []
        for i, (component, tasks) in enumerate(executors):
            windows = {name: _derived(sums[(("executor", i), name)], covered_by[(("executor", i), name)], len(tasks))
                       for name, _ in WINDOWS if (("executor", i), name) in sums}
            executors_out.append({"component": component, "tasks": list(tasks), "windows": windows})
        workers = [{k: v for k, v in w.items() if k != "received"} | {"age_s": round(now - w["received"], 1)}
                   for w in self.workers.get(topology_id, {}).values() if now - w["received"] <= STALE_WORKER]
        return {"windows": [name for name, _ in WINDOWS], "components": components, "tasks": tasks_out,
                "executors": executors_out, "totals": _topology_windows(sums, covered_by), "streams": streams,
                "workers": sorted(workers, key=lambda w: (str(w["host"]), w["port"] or 0)),
                "bad_input": dict(self.bad_input.get(topology_id) or dict.fromkeys(BAD_INPUT, 0))}
