"""``/metrics``: the cluster and every topology's metrics in Prometheus text format 0.0.4 (pure).

Counters are all-time totals per task; gauges of rates and latencies use the
10-minute window (as Storm's UI does for capacity), so they follow the
current load rather than the topology's whole life.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GAUGE_WINDOW = "600"

COUNTERS = (
    ("emitted", "streamgale_tuples_emitted_total", "Tuples emitted by the task, all streams."),
    ("transferred", "streamgale_tuples_transferred_total", "Tuples sent by the task to other tasks."),
    ("executed", "streamgale_tuples_executed_total", "Tuples the task processed (bolts)."),
    ("acked", "streamgale_tuples_acked_total", "Tuples acked (bolts) or fully processed trees (spouts)."),
    ("failed", "streamgale_tuples_failed_total", "Tuples failed (bolts) or failed / timed-out trees (spouts)."),
)
GAUGES = (
    ("capacity", "streamgale_capacity", "Share of the last 10 minutes the task spent executing (1 = saturated)."),
    ("execute_latency_ms", "streamgale_execute_latency_ms",
     "Mean time per executed tuple over the last 10 minutes, in milliseconds."),
    ("complete_latency_ms", "streamgale_complete_latency_ms",
     "Mean time from emit to full ack of a spout tuple over the last 10 minutes, in milliseconds."),
)

# What daemons refused (cluster_info's "bad_input"), labelled daemon (nimbus / supervisor), id and host.
DAEMON_COUNTERS = (
    ("rejected_requests", "streamgale_rejected_requests_total",
     "Requests on the daemon's API (nimbus) or log endpoint (supervisor) that were not valid messages."),
    ("refused_handshakes", "streamgale_refused_handshakes_total",
     "Connections to that endpoint that failed or broke off the ZeroMQ handshake."),
    ("denied_keys", "streamgale_denied_keys_total",
     "CURVE keys the daemon's authenticator refused, on any of its sockets (security on)."),
    ("malformed_messages", "streamgale_malformed_channel_messages_total",
     "Malformed messages on a supervisor's worker channel."),
)
# What a topology's workers refused on their ports over its life, across worker restarts (stats' "bad_input").
TOPOLOGY_BAD_INPUT = (
    ("dropped_frames", "streamgale_topology_dropped_frames_total",
     "Malformed frames the topology's workers dropped on their ports."),
    ("dropped_entries", "streamgale_topology_dropped_entries_total",
     "Malformed tuples or tuple groups the topology's workers dropped on their ports."),
)


def escape(value: Any) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, Any]) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _number(value: float) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[tuple[dict[str, Any], float]] = []

    def add(self, labels: Mapping[str, Any], value: Any) -> None:
        if value is not None:
            self.samples.append((dict(labels), value))

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            yield f"{self.name}{_labels(labels)} {_number(value)}"


def render(cluster: Mapping[str, Any] | None, topologies: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]]
           ) -> str:
    """``cluster``: ``cluster_info()`` (or None if unavailable); ``topologies``: ``(list row, topology_stats
    or None)`` per topology."""
    fam: dict[str, _Family] = {}

    def family(name: str, kind: str, help_text: str) -> _Family:
        return fam.setdefault(name, _Family(name, kind, help_text))

    if cluster is not None:
        sups = cluster.get("supervisors") or []
        total = sum(int(s.get("slots", 0)) for s in sups)
        used = sum(int(s.get("used", 0)) for s in sups)
        slots = family("streamgale_cluster_slots", "gauge", "Worker slots of live supervisors, by state.")
        slots.add({"state": "used"}, used)
        slots.add({"state": "free"}, max(0, total - used))
        family("streamgale_supervisors", "gauge", "Live supervisors.").add({}, len(sups))
        family("streamgale_nimbuses", "gauge", "Live nimbus daemons.").add({}, len(cluster.get("nimbuses") or []))
        daemons = {key: family(name, "counter", text) for key, name, text in DAEMON_COUNTERS}
        for d in cluster.get("bad_input") or []:
            labels = {"daemon": d.get("daemon"), "id": d.get("id"), "host": d.get("host")}
            for key, fam_ in daemons.items():
                if key in d:
                    fam_.add(labels, d[key])
    family("streamgale_topologies", "gauge", "Topologies on the cluster.").add({}, len(topologies))
    info = family("streamgale_topology_info", "gauge", "One per topology; its id and status are labels.")
    uptime = family("streamgale_topology_uptime_seconds", "gauge", "Seconds since the topology was submitted.")
    for _, name, help_text in COUNTERS:
        family(name, "counter", help_text)
    for _, name, help_text in GAUGES:
        family(name, "gauge", help_text)
    queue = family("streamgale_queue_depth", "gauge", "Tuples waiting in the task's input queue.")
    rss = family("streamgale_worker_rss_bytes", "gauge", "Resident memory of the worker process.")
    cpu = family("streamgale_worker_cpu_percent", "gauge", "CPU use of the worker process (100 = one core).")
    transport = {key: family(f"streamgale_worker_{key}_total", "counter", text) for key, text in (
        ("received", "Tuples received from other workers."), ("sent", "Tuples sent to other workers."),
        ("dropped_frames", "Malformed frames dropped on the worker's port."),
        ("dropped_entries", "Malformed tuples or tuple groups dropped on the worker's port."),
        ("denied_keys", "Peers' CURVE keys the worker's authenticator denied (security on)."))}
    topology_bad = {key: family(name, "counter", text) for key, name, text in TOPOLOGY_BAD_INPUT}

    for row, stats in topologies:
        topology = row["name"]
        info.add({"topology": topology, "id": row["id"], "status": row["status"]}, 1)
        uptime.add({"topology": topology}, row.get("uptime"))
        if not stats:
            continue
        for key, fam_ in topology_bad.items():
            fam_.add({"topology": topology}, (stats.get("bad_input") or {}).get(key))
        for task, t in sorted((stats.get("tasks") or {}).items(), key=lambda kv: int(kv[0])):
            labels = {"topology": topology, "component": t.get("component"), "task": task}
            windows = t.get("windows") or {}
            for key, name, _ in COUNTERS:
                fam[name].add(labels, (windows.get("all") or {}).get(key, 0) or 0)
            for key, name, _ in GAUGES:
                fam[name].add(labels, (windows.get(GAUGE_WINDOW) or {}).get(key))
            queue.add(labels, t.get("queue"))
        for w in stats.get("workers") or []:
            labels = {"topology": topology, "host": w.get("host"), "port": w.get("port")}
            if w.get("rss_mb") is not None:
                rss.add(labels, round(float(w["rss_mb"]) * 1024 * 1024))
            cpu.add(labels, w.get("cpu_percent"))
            for key, fam_ in transport.items():
                fam_.add(labels, (w.get("transport") or {}).get(key, 0))
    return "\n".join(line for f in fam.values() for line in f.lines()) + "\n"
