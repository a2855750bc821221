"""The UI's REST responses, built from nimbus's answers by pure functions (no I/O).

Every function here takes what :class:`streamgale.wire.rpc.NimbusClient` returned
(``cluster_info``, ``list_topologies``, ``topology_info``, ``topology_stats``)
and returns the JSON-ready dict one endpoint sends. ``stats`` is ``None`` when
nimbus could not give metrics; counts then read 0 and latencies ``None``.
The HTTP shell is :mod:`streamgale.ui.server`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamgale.client import WorkerLog, worker_log_locations
from streamgale.cluster.records import ACTIVE, INACTIVE, KILLED
from streamgale.topology import layout_tasks
from streamgale.wire.protocol import DEFAULT_STATS_WINDOW, STATS_WINDOWS

WINDOWS = tuple(name for name, _ in STATS_WINDOWS)  # the windows of `streamgale stats`
DEFAULT_WINDOW = DEFAULT_STATS_WINDOW  # and its default, 10 minutes
MAX_ERRORS = 10
DEFAULT_LOG_LINES = 200
MAX_LOG_LINES = 5000
# nimbus's snake_case metric names -> the API's camelCase ones
COUNT_FIELDS = {"emitted": "emitted", "transferred": "transferred", "executed": "executed", "acked": "acked",
                "failed": "failed", "execute_latency_ms": "executeLatencyMs", "capacity": "capacity",
                "complete_latency_ms": "completeLatencyMs"}
LATENCY_FIELDS = ("execute_latency_ms", "capacity", "complete_latency_ms")  # None when nothing was measured
KIND_ORDER = {"spout": 0, "bolt": 1, "acker": 2}


class ApiError(Exception):
    """An error answer: HTTP ``status`` and a message for the JSON body."""

    def __init__(self, status: int, message: str, type_: str = "BadRequest"):
        super().__init__(message)
        self.status = status
        self.type = type_


def parse_window(value: str | None) -> str:
    if value is None or value == "":
        return DEFAULT_WINDOW
    if value not in WINDOWS:
        raise ApiError(400, f"window must be one of {', '.join(WINDOWS)}, got {value!r}")
    return value


def parse_lines(value: str | None) -> int:
    """A log tail's ``lines``: 1 to MAX_LOG_LINES (default DEFAULT_LOG_LINES)."""
    if value is None or value == "":
        return DEFAULT_LOG_LINES
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_LOG_LINES:
        raise ApiError(400, f"lines must be a number from 1 to {MAX_LOG_LINES}, got {value[:20]!r}")
    return int(value)


def counts(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """One window's COUNTS from nimbus (or nothing) in the API's names."""
    raw = raw or {}
    out: dict[str, Any] = {}
    for key, name in COUNT_FIELDS.items():
        value = raw.get(key)
        out[name] = value if key in LATENCY_FIELDS else int(value or 0)
    return out


# -- cluster ----------------------------------------------------------------------------------


def cluster_summary(cluster: Mapping[str, Any]) -> dict[str, Any]:
    sups = cluster.get("supervisors") or []
    total = sum(int(s.get("slots", 0)) for s in sups)
    used = sum(int(s.get("used", 0)) for s in sups)
    return {"leader": cluster.get("leader"), "nimbuses": list(cluster.get("nimbuses") or []),
            "supervisors": len(sups), "slotsTotal": total, "slotsUsed": used, "slotsFree": max(0, total - used),
            "topologies": int(cluster.get("topologies") or 0)}


def supervisor_summary(cluster: Mapping[str, Any]) -> dict[str, Any]:
    out = []
    for s in cluster.get("supervisors") or []:
        total, used = int(s.get("slots", 0)), int(s.get("used", 0))
        out.append({"id": s.get("id"), "host": s.get("host"), "slotsTotal": total, "slotsUsed": used,
                    "slotsFree": max(0, total - used), "ports": s.get("ports"), "cpus": s.get("cpu_count"),
                    "memoryMb": s.get("memory_mb"), "uptimeSeconds": _seconds(s.get("uptime"))})
    return {"supervisors": out}


def topology_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "status": row["status"], "workers": row.get("workers", 0),
            "workersRequested": row.get("workers_requested", row.get("workers", 0)),
            "executors": row.get("executors", 0), "tasks": row.get("tasks", 0),
            "uptimeSeconds": _seconds(row.get("uptime")), "failing": row.get("failing")}


def topology_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"topologies": [topology_row(r) for r in rows]}


def find_topology(rows: Sequence[Mapping[str, Any]], key: str) -> Mapping[str, Any]:
    """The ``list_topologies`` row whose id or name is ``key``; 404 if none."""
    for row in rows:
        if key in (row.get("id"), row.get("name")):
            return row
    raise ApiError(404, f"no topology with id or name '{key}' is running", "NotFound")


# -- one topology -----------------------------------------------------------------------------


def _components(info: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return dict(info["topology"]["spec"]["components"])


def _ordered(components: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Spouts, then bolts, then system components; by name within each."""
    return sorted(components, key=lambda n: (KIND_ORDER.get(str(components[n].get("kind")), 1), n))


def _error(e: Mapping[str, Any]) -> dict[str, Any]:
    return {"time": e.get("time"), "task": e.get("task"), "host": e.get("host"), "port": e.get("port"),
            "message": e.get("message")}


def graph(components: Mapping[str, Mapping[str, Any]], parallelism: Mapping[str, int] | None = None
          ) -> dict[str, Any]:
    """Nodes (user components, with their depth: longest path from a spout) and edges (subscriptions).

    ``parallelism``: executors now in force (after rebalances), else the spec's."""
    names = [n for n in _ordered(components) if not n.startswith("__")]
    edges = []
    for name in names:
        for sub in components[name].get("inputs") or []:
            if sub.get("source") in components and not str(sub["source"]).startswith("__"):
                edges.append({"from": sub["source"], "to": name, "stream": sub.get("stream", "default"),
                              "grouping": sub.get("type", "?"), "fields": list(sub.get("fields") or [])})
    depth = {n: 0 for n in names}
    for _ in range(len(names)):  # longest path by relaxation; the bound stops a cycle growing forever
        changed = False
        for e in edges:
            if e["from"] != e["to"] and depth[e["to"]] < depth[e["from"]] + 1 <= len(names):
                depth[e["to"]] = depth[e["from"]] + 1
                changed = True
        if not changed:
            break
    parallelism = parallelism or {}
    nodes = [{"id": n, "kind": components[n].get("kind"), "depth": depth[n],
              "executors": parallelism.get(n, components[n].get("parallelism")), "tasks": components[n].get("tasks")}
             for n in sorted(names, key=lambda n: depth[n])]
    return {"nodes": nodes, "edges": edges}


def task_ids(info: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return layout_tasks({n: int(c.get("tasks", 0)) for n, c in _components(info).items()})


def workers(info: Mapping[str, Any], stats: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The assignment's worker slots, with each worker's process metrics when nimbus has them."""
    reported = {(str(w.get("host")), int(w.get("port") or 0)): w for w in (stats or {}).get("workers") or []}
    slots = ((info.get("assignment") or {}).get("slots") or {}).values()
    out = []
    for slot in sorted(slots, key=lambda s: (s["host"], s["port"])):
        tasks = sorted(t for _, ts in slot["executors"] for t in ts)
        w = reported.get((str(slot["host"]), int(slot["port"])), {})
        out.append({"host": slot["host"], "port": slot["port"], "supervisor": slot.get("supervisor_id"),
                    "components": sorted({c for c, _ in slot["executors"]}), "executors": len(slot["executors"]),
                    "tasks": tasks, "pid": w.get("pid"), "cpuPercent": w.get("cpu_percent"),
                    "rssMb": w.get("rss_mb"), "uptimeSeconds": _seconds(w.get("uptime_s")),
                    "reportAgeSeconds": w.get("age_s")})
    return out


def available_actions(status: str) -> dict[str, bool]:
    """Which of the page's buttons apply to a topology in ``status`` (as Storm UI's): activate an
    INACTIVE one, deactivate an ACTIVE one, rebalance either, kill any not being killed."""
    return {"activate": status == INACTIVE, "deactivate": status == ACTIVE,
            "rebalance": status in (ACTIVE, INACTIVE), "kill": status != KILLED}


def configuration(config: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    """``topology_config``'s answer as rows by key: ``{"key", "value", "source": "topology" |
    "cluster"}``; None when nimbus gave none."""
    if config is None:
        return None
    own = set(config.get("topology_keys") or ())
    return [{"key": k, "value": v, "source": "topology" if k in own else "cluster"}
            for k, v in sorted((config.get("config") or {}).items())]


TOTAL_FIELDS = {"emitted": "emitted", "transferred": "transferred", "acked": "acked", "failed": "failed",
                "complete_latency_ms": "completeLatencyMs"}


def totals(stats: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The topology's stats table, a row per window (nimbus's ``totals``): emitted and transferred by
    its components, trees acked and failed and their complete latency (its spouts')."""
    raw = (stats or {}).get("totals") or {}
    return [{"window": w, **{name: (raw.get(w) or {}).get(key, None if key == "complete_latency_ms" else 0)
                             for key, name in TOTAL_FIELDS.items()}} for w in WINDOWS]


def topology_detail(row: Mapping[str, Any], info: Mapping[str, Any], stats: Mapping[str, Any] | None,
                    window: str = DEFAULT_WINDOW, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    comps = _components(info)
    parallelism = info["topology"].get("parallelism") or {}
    stat_comps = (stats or {}).get("components") or {}
    errors = info.get("errors") or {}
    g = graph(comps, parallelism)
    depth = {n["id"]: n["depth"] for n in g["nodes"]}
    components = []
    for name in sorted(comps, key=lambda n: (KIND_ORDER.get(str(comps[n].get("kind")), 1), depth.get(n, 0), n)):
        spec = comps[name]
        last = (errors.get(name) or [None])[-1]
        components.append({
            "id": name, "kind": spec.get("kind"), "executors": parallelism.get(name, spec.get("parallelism")),
            "tasks": spec.get("tasks"), **counts(((stat_comps.get(name) or {}).get("windows") or {}).get(window)),
            "queue": (stat_comps.get(name) or {}).get("queue"), "lastError": _error(last) if last else None})
    return {**topology_row(row), "window": window, "windows": list(WINDOWS), "statsAvailable": stats is not None,
            "actions": available_actions(str(row.get("status"))), "totals": totals(stats),
            "components": components, "graph": g, "workerList": workers(info, stats),
            "startErrors": start_errors(comps, errors), "configuration": configuration(config)}


def start_errors(components: Mapping[str, Any], errors: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The newest errors reported for no component (``__package``: a code package a supervisor
    refused or whose Python environment it could not build, with pip's error; ``__worker``: a
    worker that died), newest first."""
    found = [{**_error(e), "source": name} for name, es in errors.items() if name not in components
             for e in es or []]
    return sorted(found, key=lambda e: e["time"] or 0, reverse=True)[:MAX_ERRORS]


def component_detail(row: Mapping[str, Any], info: Mapping[str, Any], stats: Mapping[str, Any] | None,
                     component: str, window: str = DEFAULT_WINDOW) -> dict[str, Any]:
    comps = _components(info)
    if component not in comps:
        raise ApiError(404, f"topology '{row['name']}' has no component '{component}' "
                            f"(components: {', '.join(_ordered(comps))})", "NotFound")
    spec = comps[component]
    available, stats = stats is not None, stats or {}
    comp_stats = (stats.get("components") or {}).get(component) or {}
    task_stats = stats.get("tasks") or {}
    endpoints = {}
    for slot in ((info.get("assignment") or {}).get("slots") or {}).values():
        for _, ts in slot["executors"]:
            for t in ts:
                endpoints[t] = (slot["host"], slot["port"])
    tasks = []
    for task in task_ids(info).get(component, ()):
        ts = task_stats.get(str(task)) or {}
        host, port = endpoints.get(task, (ts.get("host") or None, ts.get("port") or None))
        tasks.append({"task": task, "host": host, "port": port, **counts((ts.get("windows") or {}).get(window)),
                      "queue": ts.get("queue"), "metrics": dict(ts.get("metrics") or {})})
    errors = [_error(e) for e in reversed((info.get("errors") or {}).get(component) or [])][:MAX_ERRORS]
    streams = stats.get("streams") or {}
    return {"id": component, "topology": row["name"], "topologyId": row["id"], "kind": spec.get("kind"),
            "executors": (info["topology"].get("parallelism") or {}).get(component, spec.get("parallelism")),
            "taskCount": spec.get("tasks"), "window": window, "statsAvailable": available,
            "windows": {w: counts((comp_stats.get("windows") or {}).get(w)) for w in WINDOWS},
            "streams": streams.get(component) or {},
            "inputs": list(spec.get("inputs") or []), "outputs": dict(spec.get("outputs") or {}),
            "outputStats": output_stats(spec, streams.get(component) or {}, window),
            "inputStats": input_stats(spec, streams, window),
            "executorStats": executor_stats(component, stats, endpoints, window),
            "tasks": tasks, "errors": errors}


def output_stats(spec: Mapping[str, Any], streams: Mapping[str, Mapping[str, int]], window: str
                 ) -> list[dict[str, Any]]:
    """A row per output stream (the declared ones, then any other it emitted on but the system
    streams): its fields and the tuples emitted on it in ``window``."""
    declared = dict(spec.get("outputs") or {})
    names = sorted(declared, key=lambda s: (s != "default", s)) + sorted(
        s for s in streams if s not in declared and not s.startswith("__"))
    return [{"stream": s, "fields": list(declared.get(s) or []), "emitted": int((streams.get(s) or {}).get(window, 0))}
            for s in names]


def input_stats(spec: Mapping[str, Any], streams: Mapping[str, Mapping[str, Mapping[str, int]]], window: str
                ) -> list[dict[str, Any]]:
    """A row per subscription (source component and stream): its grouping and fields, and the
    tuples the source emitted on that stream in ``window``."""
    return [{"source": i.get("source"), "stream": i.get("stream", "default"), "grouping": i.get("type"),
             "fields": list(i.get("fields") or []),
             "emitted": int(((streams.get(str(i.get("source"))) or {}).get(i.get("stream", "default")) or {})
                            .get(window, 0))}
            for i in spec.get("inputs") or []]


def executor_stats(component: str, stats: Mapping[str, Any], endpoints: Mapping[int, tuple[Any, Any]],
                   window: str) -> list[dict[str, Any]]:
    """A row per executor of ``component`` (nimbus's ``executors``: its tasks' counts summed), with
    the worker it runs in and that worker's uptime, Storm's ``[first-last]`` task range as its id."""
    uptime = {(str(w.get("host")), w.get("port")): w.get("uptime_s") for w in stats.get("workers") or []}
    out = []
    for e in stats.get("executors") or []:
        if e.get("component") != component or not e.get("tasks"):
            continue
        tasks = [int(t) for t in e["tasks"]]
        host, port = endpoints.get(tasks[0], (None, None))
        out.append({"id": f"[{tasks[0]}-{tasks[-1]}]", "tasks": tasks, "host": host, "port": port,
                    "uptimeSeconds": _seconds(uptime.get((str(host), port))),
                    **counts((e.get("windows") or {}).get(window))})
    return out


# -- worker logs ------------------------------------------------------------------------------


def find_worker_log(row: Mapping[str, Any], info: Mapping[str, Any], cluster: Mapping[str, Any],
                    worker: str) -> WorkerLog:
    """Where the log of ``worker`` ("host:port") of the topology is read; 404 if the topology has no
    such worker now, 502 if its supervisor serves no logs."""
    logs = worker_log_locations(info, cluster.get("supervisors") or [])
    found = next((log for log in logs if log.worker == worker), None)
    if found is None:
        raise ApiError(404, f"topology '{row['name']}' has no worker {worker} now (its workers: "
                            f"{', '.join(sorted(log.worker for log in logs)) or 'none'})", "NotFound")
    if found.endpoint is None:
        raise ApiError(502, f"no log access to {worker}: its supervisor is not reachable", "Unavailable")
    return found


def worker_log(row: Mapping[str, Any], log: WorkerLog, lines: list[str], offset: int, wanted: int) -> dict[str, Any]:
    return {"topology": row["name"], "topologyId": row["id"], "worker": log.worker, "lines": lines,
            "linesRequested": wanted, "offset": offset}


# -- actions ----------------------------------------------------------------------------------


def _number(body: Mapping[str, Any], key: str, minimum: float, integer: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        return None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        what = "an integer" if integer else "a number"
        raise ApiError(400, f"'{key}' must be {what} >= {minimum:g}, got {value!r}")
    return value


def action_args(action: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for the NimbusClient method of ``action``, from the POSTed JSON body."""
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    if action in ("activate", "deactivate"):
        return {}
    wait = _number(body, "wait", 0)
    if action == "kill":
        return {"wait": wait}
    if action == "rebalance":
        workers = _number(body, "workers", 1, integer=True)
        executors = body.get("executors") or {}
        if not isinstance(executors, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
                for k, v in executors.items()):
            raise ApiError(400, "'executors' must map component names to integers >= 1")
        if workers is None and not executors:
            raise ApiError(400, "nothing to change: give 'workers' and/or 'executors'")
        return {"wait": wait, "workers": workers, "parallelism": dict(executors)}
    raise ApiError(404, f"unknown action '{action}' (activate, deactivate, rebalance, kill)", "NotFound")


def _seconds(value: Any) -> int | None:
    return None if value is None else int(value)
