"""The web UI (`streamgale ui`): its pure response builders, then the real thing against a real
cluster (REST API, actions, /metrics) and the page itself in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT, STREAMGALE, wait_for

from streamgale.dev.ports import free_port
from streamgale.ui import api, prometheus

TOPOLOGY = str(ROOT / "tests" / "topologies" / "cluster_word_count.py")
BROKEN_TOPOLOGY = """
from streamgale import Spout, Topology


class Nothing(Spout):
    outputs = ["n"]

    def next_tuple(self):
        pass


topology = Topology("broken")
topology.spout("nothing", Nothing)
"""
COMPONENTS = ["sentences", "split", "count", "sink", "__acker"]  # spouts, bolts by depth, system
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
slow = pytest.mark.slow


# -- pure builders (no cluster) ---------------------------------------------------------------

SPEC = {"components": {
    "words": {"kind": "spout", "parallelism": 1, "tasks": 1, "inputs": [], "outputs": {"default": ["w"]}},
    "count": {"kind": "bolt", "parallelism": 2, "tasks": 4, "outputs": {"default": ["w", "n"]},
              "inputs": [{"source": "split", "stream": "default", "type": "fields", "fields": ["w"]}]},
    "split": {"kind": "bolt", "parallelism": 1, "tasks": 1, "outputs": {"default": ["w"]},
              "inputs": [{"source": "words", "stream": "default", "type": "shuffle"}]},
    "__acker": {"kind": "acker", "parallelism": 1, "tasks": 1, "inputs": [], "outputs": {}},
}}
ROW = {"id": "wc-1", "name": "wc", "status": "ACTIVE", "workers": 1, "executors": 5, "tasks": 7, "uptime": 12.7}
SLOT = {"supervisor_id": "s1", "host": "h", "port": 6700,
        "executors": [["count", [1, 2]], ["count", [3, 4]], ["split", [5]], ["words", [6]], ["__acker", [7]]]}
INFO = {"topology": {"id": "wc-1", "spec": SPEC, "parallelism": {"count": 3}},
        "assignment": {"slots": {"s1:6700": SLOT}},
        "errors": {"count": [{"component": "count", "task": t, "host": "h", "port": 6700, "time": float(t),
                              "message": f"ValueError: bad {t}\nTraceback ..."} for t in range(1, 13)]}}
W = {"emitted": 5, "transferred": 4, "executed": 3, "acked": 2, "failed": 1, "execute_latency_ms": 0.5,
     "capacity": 0.25, "complete_latency_ms": None}
STATS = {"windows": list(api.WINDOWS),
         "components": {"count": {"kind": "bolt", "tasks": [1, 2, 3, 4], "queue": 7,
                                  "windows": {w: W for w in api.WINDOWS}}},
         "tasks": {"1": {"component": "count", "host": "h", "port": 6700, "queue": 7,
                         "windows": {w: W for w in api.WINDOWS}, "metrics": {"model_version": 2}}},
         "streams": {"count": {"default": {w: 5 for w in api.WINDOWS}}},
         "workers": [{"host": "h", "port": 6700, "pid": 42, "cpu_percent": 12.5, "rss_mb": 50.0, "uptime_s": 9.9,
                      "age_s": 0.4}]}
CLUSTER = {"leader": "n1:6627", "nimbuses": ["n1:6627", "n2:6627"], "topologies": 1,
           "supervisors": [{"id": "s1", "host": "h", "slots": 4, "used": 1, "ports": [6700, 6701, 6702, 6703],
                            "log_port": 7000, "cpu_count": 8, "memory_mb": 1024, "uptime": 60.5},
                           {"id": "s2", "host": "h2", "slots": 2, "used": 0, "ports": [6700, 6701],
                            "cpu_count": 4, "memory_mb": 512, "uptime": 1.0}]}


CONFIG = {"config": {"topology.workers": 2, "nimbus.port": 6627, "test.dir": "/x"},
          "topology_keys": ["test.dir", "topology.workers"]}


def test_cluster_and_supervisor_summaries():
    assert api.cluster_summary(CLUSTER) == {"leader": "n1:6627", "nimbuses": ["n1:6627", "n2:6627"],
                                            "supervisors": 2, "slotsTotal": 6, "slotsUsed": 1, "slotsFree": 5,
                                            "topologies": 1}
    s1 = api.supervisor_summary(CLUSTER)["supervisors"][0]
    assert s1 == {"id": "s1", "host": "h", "slotsTotal": 4, "slotsUsed": 1, "slotsFree": 3,
                  "ports": [6700, 6701, 6702, 6703], "cpus": 8, "memoryMb": 1024, "uptimeSeconds": 60}


def test_topology_detail_orders_components_and_builds_the_graph():
    d = api.topology_detail(ROW, INFO, STATS, "600")
    assert [c["id"] for c in d["components"]] == ["words", "split", "count", "__acker"]
    count = d["components"][2]
    assert count == {"id": "count", "kind": "bolt", "executors": 3, "tasks": 4, "emitted": 5, "transferred": 4,
                     "executed": 3, "acked": 2, "failed": 1, "executeLatencyMs": 0.5, "capacity": 0.25,
                     "completeLatencyMs": None, "queue": 7,
                     "lastError": {"time": 12.0, "task": 12, "host": "h", "port": 6700,
                                   "message": "ValueError: bad 12\nTraceback ..."}}
    assert d["components"][1]["emitted"] == 0 and d["components"][1]["capacity"] is None  # no stats: zeros
    assert {n["id"]: (n["depth"], n["executors"]) for n in d["graph"]["nodes"]} == {
        "words": (0, 1), "split": (1, 1), "count": (2, 3)}  # executors after a rebalance
    assert sorted(d["graph"]["edges"], key=lambda e: e["from"]) == [
        {"from": "split", "to": "count", "stream": "default", "grouping": "fields", "fields": ["w"]},
        {"from": "words", "to": "split", "stream": "default", "grouping": "shuffle", "fields": []}]
    assert d["workers"] == 1 and d["uptimeSeconds"] == 12 and d["window"] == "600"
    assert d["workerList"] == [{"host": "h", "port": 6700, "supervisor": "s1",
                                "components": ["__acker", "count", "split", "words"], "executors": 5,
                                "tasks": [1, 2, 3, 4, 5, 6, 7], "pid": 42, "cpuPercent": 12.5, "rssMb": 50.0,
                                "uptimeSeconds": 9, "reportAgeSeconds": 0.4}]
    bare = api.topology_detail(ROW, INFO, None)
    assert not bare["statsAvailable"] and all(c["emitted"] == 0 for c in bare["components"])
    assert bare["workerList"][0]["pid"] is None


def test_errors_of_no_component_are_the_start_errors_newest_first():
    info = {**INFO, "errors": {**INFO["errors"], "__package": [
        {"task": -1, "host": "h", "port": 0, "time": 1.0, "message": "refused: pip failed"}], "__worker": [
        {"task": -1, "host": "h", "port": 6700, "time": 2.0, "message": "worker died: exit 1"}]}}
    d = api.topology_detail(ROW, info, STATS)
    assert d["startErrors"] == [
        {"source": "__worker", "time": 2.0, "task": -1, "host": "h", "port": 6700, "message": "worker died: exit 1"},
        {"source": "__package", "time": 1.0, "task": -1, "host": "h", "port": 0, "message": "refused: pip failed"}]
    assert api.topology_detail(ROW, INFO, STATS)["startErrors"] == []


def test_graph_depth_is_the_longest_path_and_survives_cycles():
    comps = {"s": {"kind": "spout", "inputs": []},
             "a": {"kind": "bolt", "inputs": [{"source": "s", "type": "shuffle"}, {"source": "b", "type": "all"}]},
             "b": {"kind": "bolt", "inputs": [{"source": "a", "type": "shuffle"}]},
             "c": {"kind": "bolt", "inputs": [{"source": "s", "type": "global"}, {"source": "b", "type": "direct"}]}}
    depth = {n["id"]: n["depth"] for n in api.graph(comps)["nodes"]}
    assert depth["s"] == 0 and depth["c"] >= 2 and max(depth.values()) <= len(comps)


def test_component_detail_lists_every_task_and_the_last_ten_errors():
    c = api.component_detail(ROW, INFO, STATS, "count")
    assert [t["task"] for t in c["tasks"]] == [1, 2, 3, 4]
    assert c["tasks"][0] == {"task": 1, "host": "h", "port": 6700, "emitted": 5, "transferred": 4, "executed": 3,
                             "acked": 2, "failed": 1, "executeLatencyMs": 0.5, "capacity": 0.25,
                             "completeLatencyMs": None, "queue": 7, "metrics": {"model_version": 2}}
    assert c["tasks"][3]["emitted"] == 0 and c["tasks"][3]["host"] == "h" and c["tasks"][3]["metrics"] == {}
    assert [e["task"] for e in c["errors"]] == list(range(12, 2, -1))  # newest first, ten of them
    assert set(c["windows"]) == set(api.WINDOWS) and c["windows"]["all"]["emitted"] == 5
    with pytest.raises(api.ApiError) as e:
        api.component_detail(ROW, INFO, STATS, "nope")
    assert e.value.status == 404 and "count" in str(e.value)


def test_the_topology_page_has_storms_windowed_stats_its_configuration_and_the_actions_that_apply():
    """Issue 19, item 11: Storm UI's topology stats table, the effective configuration, and buttons
    enabled only when they apply."""
    stats = {**STATS, "totals": {"600": {"emitted": 9, "transferred": 8, "acked": 7, "failed": 1,
                                         "complete_latency_ms": 2.5}}}
    d = api.topology_detail(ROW, INFO, stats, "600", CONFIG)
    assert d["totals"][0] == {"window": "600", "emitted": 9, "transferred": 8, "acked": 7, "failed": 1,
                              "completeLatencyMs": 2.5}
    assert [t["window"] for t in d["totals"]] == ["600", "10800", "86400", "all"]  # the windows of `stats`
    assert d["totals"][3] == {"window": "all", "emitted": 0, "transferred": 0, "acked": 0, "failed": 0,
                              "completeLatencyMs": None}  # none reported for it
    assert d["configuration"] == [{"key": "nimbus.port", "value": 6627, "source": "cluster"},
                                  {"key": "test.dir", "value": "/x", "source": "topology"},
                                  {"key": "topology.workers", "value": 2, "source": "topology"}]
    assert api.topology_detail(ROW, INFO, None)["configuration"] is None  # a nimbus without the op
    assert d["actions"] == {"activate": False, "deactivate": True, "rebalance": True, "kill": True}
    assert api.available_actions("INACTIVE") == {"activate": True, "deactivate": False, "rebalance": True,
                                                 "kill": True}
    assert api.available_actions("REBALANCING") == {"activate": False, "deactivate": False, "rebalance": False,
                                                    "kill": True}
    assert api.available_actions("KILLED") == {"activate": False, "deactivate": False, "rebalance": False,
                                               "kill": False}


def test_the_component_page_has_stream_source_and_executor_tables():
    """Issue 19, item 11: per-stream output, per-source input and per-executor tables, from nimbus's stats."""
    stats = {**STATS, "streams": {"count": {"default": {"600": 5, "all": 50}, "__ack_ack": {"600": 1}},
                                  "split": {"default": {"600": 7, "all": 70}}},
             "executors": [{"component": "count", "tasks": [1, 2], "windows": {"600": W}},
                           {"component": "count", "tasks": [3, 4], "windows": {}},
                           {"component": "split", "tasks": [5], "windows": {"600": W}}]}
    c = api.component_detail(ROW, INFO, stats, "count", "600")
    assert c["outputStats"] == [{"stream": "default", "fields": ["w", "n"], "emitted": 5}]  # no system stream
    assert c["inputStats"] == [{"source": "split", "stream": "default", "grouping": "fields", "fields": ["w"],
                                "emitted": 7}]
    assert c["executorStats"][0] == {"id": "[1-2]", "tasks": [1, 2], "host": "h", "port": 6700, "uptimeSeconds": 9,
                                     **api.counts(W)}
    assert [e["id"] for e in c["executorStats"]] == ["[1-2]", "[3-4]"]
    assert c["executorStats"][1]["emitted"] == 0 and c["executorStats"][1]["capacity"] is None
    bare = api.component_detail(ROW, INFO, None, "count")
    assert bare["executorStats"] == [] and bare["outputStats"][0]["emitted"] == 0


def test_a_worker_log_is_found_through_its_supervisor_or_refused_naming_the_workers():
    found = api.find_worker_log(ROW, INFO, CLUSTER, "h:6700")
    assert (found.endpoint, found.topology_id, found.port) == ("h:7000", "wc-1", 6700)
    with pytest.raises(api.ApiError, match=r"has no worker h:1 now \(its workers: h:6700\)") as e:
        api.find_worker_log(ROW, INFO, CLUSTER, "h:1")
    assert e.value.status == 404
    no_logs = {**CLUSTER, "supervisors": [{**CLUSTER["supervisors"][0], "log_port": None}]}
    with pytest.raises(api.ApiError, match="its supervisor is not reachable") as e:
        api.find_worker_log(ROW, INFO, no_logs, "h:6700")
    assert e.value.status == 502
    assert api.parse_lines(None) == 200 and api.parse_lines("5") == 5
    for bad in ("0", "x", "-1", "5001"):
        with pytest.raises(api.ApiError, match="lines must be a number from 1 to 5000"):
            api.parse_lines(bad)


def test_lookups_windows_and_action_bodies_are_checked():
    assert api.find_topology([ROW], "wc-1") is ROW and api.find_topology([ROW], "wc") is ROW
    with pytest.raises(api.ApiError, match="no topology") as e:
        api.find_topology([ROW], "other")
    assert e.value.status == 404
    assert api.parse_window(None) == "600" and api.parse_window("10800") == "10800"  # `streamgale stats`'s default
    with pytest.raises(api.ApiError, match="window must be one of"):
        api.parse_window("7")
    assert api.action_args("deactivate", {}) == {}
    assert api.action_args("kill", {"wait": 0}) == {"wait": 0}
    assert api.action_args("rebalance", {"workers": 2, "executors": {"count": 4}}) == {
        "wait": None, "workers": 2, "parallelism": {"count": 4}}
    for body in ({}, {"workers": 0}, {"workers": "2"}, {"executors": {"count": 0}}, {"workers": 1, "wait": -1}):
        with pytest.raises(api.ApiError):
            api.action_args("rebalance", body)


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_]\w*="(?:[^"\\\n]|\\.)*")(,[a-zA-Z_]\w*="(?:[^"\\\n]|\\.)*")*\})?'
                    r' (-?[0-9.e+-]+|NaN|[+-]Inf)$')


def check_exposition(text: str) -> dict[str, float]:
    """Every line valid text format 0.0.4 and every sample under a TYPE; returns {series: value}."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge") and name not in typed, line
            typed[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        assert m.group(1) in typed, f"no TYPE for {line!r}"
        series = line.rsplit(" ", 1)[0]
        assert series not in samples, f"duplicate series {series}"
        samples[series] = float(line.rsplit(" ", 1)[1])
    return samples


def test_prometheus_text_escapes_labels_and_skips_unmeasured_gauges():
    row = {**ROW, "name": 'odd "name"\\x\ny'}
    samples = check_exposition(prometheus.render(CLUSTER, [(row, STATS), (ROW, None)]))
    label = 'topology="odd \\"name\\"\\\\x\\ny"'
    assert samples[f'streamgale_tuples_emitted_total{{{label},component="count",task="1"}}'] == 5
    assert samples[f'streamgale_capacity{{{label},component="count",task="1"}}'] == 0.25
    assert not any(s.startswith("streamgale_complete_latency_ms{") for s in samples)  # None: left out
    assert samples[f'streamgale_worker_rss_bytes{{{label},host="h",port="6700"}}'] == 50 * 1024 * 1024
    assert samples['streamgale_cluster_slots{state="free"}'] == 5
    assert samples["streamgale_topologies"] == 2


class FakeClient:
    """Stands in for NimbusClient in the HTTP shell: canned answers, recorded actions."""

    calls: list = []

    def __init__(self, fail: Exception | None = None):
        self.fail = fail

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def cluster_info(self):
        if self.fail:
            raise self.fail
        return CLUSTER

    def list_topologies(self):
        return [ROW]

    def topology_info(self, name):
        return INFO

    def topology_stats(self, name):
        from streamgale.wire.protocol import BadRequest
        raise BadRequest("unsupported request TopologyStats")  # an older nimbus

    def topology_config(self, name):
        return CONFIG

    def deactivate(self, name):
        self.calls.append(("deactivate", name))


class FakeLogEndpoint:
    """Stands in for a supervisor's log endpoint: a log of 300 numbered lines."""

    log = b"".join(b"line %d\n" % i for i in range(300))
    reads: list = []

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def read_log(self, topology_id, port, offset, max_bytes):
        self.reads.append((self.endpoint, topology_id, port))
        data = self.log[-max_bytes:] if offset == -1 else self.log[offset:offset + max_bytes]
        return {"data": data, "offset": len(self.log), "size": len(self.log)}


def test_http_shell_routes_maps_nimbus_errors_and_survives_missing_stats():
    import threading

    from streamgale.ui.server import UiServer
    from streamgale.wire.protocol import NimbusUnavailable

    fail = {"now": None}
    server = UiServer(("127.0.0.1", 0), lambda: FakeClient(fail["now"]), log_client_factory=FakeLogEndpoint)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        ui = Ui(server.url.rstrip("/"))
        assert ui.get("/api/v1/cluster/summary") == (200, api.cluster_summary(CLUSTER))
        status, t = ui.get("/api/v1/topology/wc-1")
        assert status == 200 and not t["statsAvailable"] and t["components"][0]["emitted"] == 0
        assert ui.get("/api/v1/topology/wc/component/nope")[0] == 404
        assert t["window"] == "600" and t["configuration"][0] == {"key": "nimbus.port", "value": 6627,
                                                                  "source": "cluster"}
        status, tail = ui.get("/api/v1/topology/wc/worker/h:6700/log?lines=3")
        assert status == 200 and tail == {"topology": "wc", "topologyId": "wc-1", "worker": "h:6700",
                                          "lines": ["line 297", "line 298", "line 299"], "linesRequested": 3,
                                          "offset": len(FakeLogEndpoint.log)}
        assert FakeLogEndpoint.reads[-1] == ("h:7000", "wc-1", 6700)  # s1's log port
        assert len(ui.get("/api/v1/topology/wc/worker/h:6700/log")[1]["lines"]) == 200  # the default
        status, body = ui.get("/api/v1/topology/wc/worker/h:6799/log")
        assert status == 404 and "has no worker h:6799 now (its workers: h:6700)" in body["error"]
        assert ui.get("/api/v1/topology/wc/worker/h:6700/log?lines=0")[0] == 400
        assert ui.post("/api/v1/topology/wc/deactivate") == (200, {"status": "ok", "action": "deactivate",
                                                                   "topology": "wc"})
        assert FakeClient.calls == [("deactivate", "wc")]
        assert ui.request("POST", "/api/v1/topology/wc/deactivate", b"{", "application/json")[0] == 400
        assert ui.get("/nope")[0] == 404 and ui.get("/static/../server.py")[0] == 404
        status, ctype, page = ui.text("/")
        assert status == 200 and ctype.startswith("text/html") and "/static/app.js" in page
        fail["now"] = NimbusUnavailable("cannot reach nimbus at h:1 within 3 s")
        status, body = ui.get("/api/v1/cluster/summary")
        assert status == 502 and body["type"] == "Unavailable" and "cannot reach nimbus" in body["error"]
    finally:
        server.shutdown()
        server.server_close()


# -- against a real cluster -------------------------------------------------------------------


class Ui:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str) -> tuple[int, dict]:
        return self.request("GET", path)

    def post(self, path: str, body=None, content_type: str = "application/json") -> tuple[int, dict]:
        return self.request("POST", path, json.dumps(body or {}).encode(), content_type)

    def request(self, method: str, path: str, data: bytes | None = None, content_type: str | None = None):
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type} if content_type else {})
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                body = r.read().decode()
                return r.status, (json.loads(body) if r.headers.get_content_type() == "application/json" else body)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode())

    def text(self, path: str) -> tuple[int, str, str]:
        with urllib.request.urlopen(self.url + path, timeout=15) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()

    def topology(self, name: str, window: str = "all") -> dict | None:
        status, body = self.get(f"/api/v1/topology/{name}?window={window}")
        return body if status == 200 else None

    def component_value(self, name: str, component: str, key: str) -> int:
        t = self.topology(name)
        return next(c[key] for c in t["components"] if c["id"] == component) if t else 0


@pytest.fixture
def ui(cluster, processes):  # noqa: F811  (fixture)
    port = free_port()
    log = open(cluster.dir / "ui.log", "ab")
    proc = processes.start([*STREAMGALE, "--config", str(cluster.config_file), "ui", "--port", str(port)],
                           stdout=log, stderr=subprocess.STDOUT)
    client = Ui(f"http://127.0.0.1:{port}")

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"streamgale ui exited with {proc.returncode}\n{cluster.logs()}")
        try:
            status, body = client.get("/api/v1/cluster/summary")
        except OSError:
            return False
        return status == 200 and body["supervisors"] == 2
    wait_for(ready, timeout=30, interval=0.1, message="the UI to answer with 2 supervisors")
    try:
        yield client
    finally:
        log.close()


def submit(cluster, tmp_path: Path, rate: int = 50) -> None:  # noqa: F811
    result = cluster.cli("submit", TOPOLOGY, "-c", f"test.output_dir={tmp_path / 'out'}",
                         "-c", "test.sentences=1000000", "-c", f"test.rate={rate}")
    assert result.returncode == 0, result.stderr + cluster.logs()


def poll(cluster, predicate, message: str, timeout: float = 30):  # noqa: F811
    """Polls (5 times a second: each poll is a few nimbus calls) until truthy; fails fast if a daemon died."""
    def check():
        cluster.check_alive()
        return predicate()
    return wait_for(check, timeout=timeout, interval=0.2, message=message)


def running(cluster, ui: Ui) -> dict:  # noqa: F811
    """Waits until cluster-wc runs on its 2 workers and both have reported metrics; its detail."""
    return poll(cluster, lambda: (t := ui.topology("cluster-wc")) and t["workers"] == 2
                and t["statsAvailable"] and t["components"][0]["emitted"] > 0
                and all(w["pid"] for w in t["workerList"]) and t,
                message="cluster-wc to run on 2 workers and report metrics", timeout=60)


@slow
def test_rest_api_shapes_and_prometheus_metrics(cluster, ui, tmp_path):  # noqa: F811
    submit(cluster, tmp_path)
    detail = running(cluster, ui)

    status, summary = ui.get("/api/v1/cluster/summary")
    assert status == 200
    assert summary == {"leader": f"127.0.0.1:{cluster.nimbus_port}", "nimbuses": [f"127.0.0.1:{cluster.nimbus_port}"],
                       "supervisors": 2, "slotsTotal": 4, "slotsUsed": 2, "slotsFree": 2, "topologies": 1}

    status, sups = ui.get("/api/v1/supervisor/summary")
    assert status == 200 and len(sups["supervisors"]) == 2
    for s in sups["supervisors"]:
        assert set(s) == {"id", "host", "slotsTotal", "slotsUsed", "slotsFree", "ports", "cpus", "memoryMb",
                          "uptimeSeconds"}
        assert s["slotsTotal"] == 2 and s["slotsUsed"] == 1 and len(s["ports"]) == 2 and s["cpus"] >= 1
    assert sorted(p for s in sups["supervisors"] for p in s["ports"]) == [
        base + i for base in cluster.slot_bases for i in range(2)]

    status, tops = ui.get("/api/v1/topology/summary")
    assert status == 200 and len(tops["topologies"]) == 1
    top = tops["topologies"][0]
    assert top["name"] == "cluster-wc" and top["id"].startswith("cluster-wc-")
    assert (top["status"], top["workers"], top["executors"], top["tasks"]) == ("ACTIVE", 2, 10, 12)
    assert isinstance(top["uptimeSeconds"], int)

    by_id = ui.topology(top["id"])  # the id works as well as the name
    assert by_id["name"] == "cluster-wc" and by_id["id"] == top["id"]
    assert [c["id"] for c in detail["components"]] == COMPONENTS
    assert {c["id"]: (c["kind"], c["executors"], c["tasks"]) for c in detail["components"]} == {
        "sentences": ("spout", 2, 2), "split": ("bolt", 2, 2), "count": ("bolt", 2, 4), "sink": ("bolt", 2, 2),
        "__acker": ("acker", 2, 2)}
    for c in detail["components"]:
        assert {"emitted", "transferred", "executed", "acked", "failed", "executeLatencyMs", "capacity",
                "completeLatencyMs", "lastError"} <= set(c)
    assert {(e["from"], e["to"], e["grouping"]) for e in detail["graph"]["edges"]} == {
        ("sentences", "split", "shuffle"), ("split", "count", "fields"), ("count", "sink", "shuffle")}
    assert {n["id"]: n["depth"] for n in detail["graph"]["nodes"]} == {"sentences": 0, "split": 1, "count": 2,
                                                                        "sink": 3}
    assert len(detail["workerList"]) == 2 and all(w["pid"] for w in detail["workerList"])
    assert detail["actions"] == {"activate": False, "deactivate": True, "rebalance": True, "kill": True}
    assert [t["window"] for t in detail["totals"]] == ["600", "10800", "86400", "all"]
    assert detail["totals"][3]["emitted"] > 0
    config = {c["key"]: c for c in detail["configuration"]}
    assert config["topology.workers"] == {"key": "topology.workers", "value": 2, "source": "topology"}
    assert config["topology.message_timeout"]["source"] == "cluster"
    assert ui.get("/api/v1/topology/cluster-wc")[1]["window"] == "600"  # the default of `streamgale stats`

    # a worker's log, read through its supervisor (what `streamgale logs` shows)
    worker = detail["workerList"][0]
    status, log = ui.get(f"/api/v1/topology/cluster-wc/worker/{worker['host']}:{worker['port']}/log?lines=5")
    assert status == 200 and log["worker"] == f"{worker['host']}:{worker['port']}" and 1 <= len(log["lines"]) <= 5
    assert any("streamgale" in line for line in ui.get(
        f"/api/v1/topology/cluster-wc/worker/{worker['host']}:{worker['port']}/log")[1]["lines"])
    poll(cluster, lambda: ui.component_value("cluster-wc", "count", "executed") > 0,
         message="count to execute tuples")
    assert ui.topology("cluster-wc", window="600")["window"] == "600"

    status, comp = ui.get("/api/v1/topology/cluster-wc/component/count?window=600")
    assert status == 200
    assert (comp["id"], comp["topology"], comp["kind"], comp["window"]) == ("count", "cluster-wc", "bolt", "600")
    assert set(comp["windows"]) == {"600", "10800", "86400", "all"} and comp["errors"] == []
    assert [t["task"] for t in comp["tasks"]] == [1, 2, 3, 4]
    for t in comp["tasks"]:
        assert t["host"] == "127.0.0.1" and t["port"] in [b + i for b in cluster.slot_bases for i in range(2)]
        assert {"emitted", "executed", "acked", "failed", "executeLatencyMs", "capacity", "queue"} <= set(t)
    assert [(e["id"], e["tasks"]) for e in comp["executorStats"]] == [("[1-2]", [1, 2]), ("[3-4]", [3, 4])]
    assert sum(e["executed"] for e in comp["executorStats"]) > 0
    assert [o["stream"] for o in comp["outputStats"]] == ["default"]
    assert [(i["source"], i["grouping"], i["fields"]) for i in comp["inputStats"]] == [("split", "fields", ["word"])]
    assert comp["inputStats"][0]["emitted"] > 0  # what split emitted on the stream count reads

    for path in ("/api/v1/topology/no-such-topology", "/api/v1/topology/no-such-topology/component/count",
                 "/api/v1/topology/cluster-wc/component/no-such-component"):
        status, body = ui.get(path)
        assert status == 404 and body["type"] == "NotFound" and body["status"] == 404, (path, body)
        assert "no-such" in body["error"]
    status, body = ui.get("/api/v1/topology/cluster-wc?window=5")
    assert status == 400 and "window" in body["error"]

    # /metrics: valid text format, with the topology's series, counting up
    status, ctype, text = ui.text("/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    samples = check_exposition(text)
    emitted = {k: v for k, v in samples.items()
               if k.startswith('streamgale_tuples_emitted_total{topology="cluster-wc",component="sentences",')}
    assert len(emitted) == 2 and sum(emitted.values()) > 0
    for name in ("streamgale_tuples_transferred_total", "streamgale_tuples_executed_total",
                 "streamgale_tuples_acked_total", "streamgale_tuples_failed_total", "streamgale_queue_depth"):
        assert sum(1 for k in samples if k.startswith(name + '{topology="cluster-wc"')) == 12, name
    assert sum(1 for k in samples if k.startswith('streamgale_worker_rss_bytes{topology="cluster-wc"')) == 2
    assert sum(1 for k in samples if k.startswith('streamgale_worker_cpu_percent{topology="cluster-wc"')) == 2
    assert samples['streamgale_cluster_slots{state="used"}'] == 2
    assert samples['streamgale_cluster_slots{state="free"}'] == 2
    assert samples["streamgale_topologies"] == 1

    def emitted_total():
        return sum(v for k, v in check_exposition(ui.text("/metrics")[2]).items()
                   if k.startswith('streamgale_tuples_emitted_total{topology="cluster-wc",component="sentences"'))
    before = emitted_total()
    poll(cluster, lambda: emitted_total() > before, message="/metrics counters to rise")


@slow
def test_actions_deactivate_activate_rebalance_kill(cluster, ui, tmp_path):  # noqa: F811
    submit(cluster, tmp_path)
    running(cluster, ui)

    def listed_status():
        out = cluster.cli("list")
        row = next((line.split() for line in out.stdout.splitlines() if line.startswith("cluster-wc ")), None)
        return row[2] if row else None

    assert ui.post("/api/v1/topology/cluster-wc/deactivate") == (
        200, {"status": "ok", "action": "deactivate", "topology": "cluster-wc"})
    poll(cluster, lambda: listed_status() == "INACTIVE", message="status INACTIVE in `streamgale list`")
    assert ui.topology("cluster-wc")["status"] == "INACTIVE"
    status, body = ui.post("/api/v1/topology/cluster-wc/activate")
    assert status == 200 and body["status"] == "ok"
    poll(cluster, lambda: ui.topology("cluster-wc")["status"] == "ACTIVE", message="status ACTIVE")
    assert listed_status() == "ACTIVE"

    # refused requests: JSON errors, nothing changed
    status, body = ui.post("/api/v1/topology/cluster-wc/deactivate", content_type="text/plain")
    assert status == 415 and "application/json" in body["error"]
    status, body = ui.post("/api/v1/topology/cluster-wc/rebalance", {"executors": {"count": 9}})
    assert status == 400 and "task count 4" in body["error"]  # nimbus's own message
    status, body = ui.post("/api/v1/topology/cluster-wc/rebalance", {})
    assert status == 400 and "nothing to change" in body["error"]
    status, body = ui.post("/api/v1/topology/no-such-topology/kill", {"wait": 0})
    assert status == 404 and body["type"] == "NotFound"
    status, body = ui.post("/api/v1/topology/cluster-wc/explode")
    assert status == 404 and "unknown action" in body["error"]
    assert listed_status() == "ACTIVE"

    status, body = ui.post("/api/v1/topology/cluster-wc/rebalance", {"workers": 1, "executors": {"count": 4},
                                                                     "wait": 0})
    assert status == 200 and body["status"] == "ok"
    poll(cluster, lambda: (t := ui.topology("cluster-wc")) and t["status"] == "ACTIVE" and t["workers"] == 1
         and next(c for c in t["components"] if c["id"] == "count")["executors"] == 4,
         message="the rebalance to 1 worker and 4 count executors")

    status, body = ui.post("/api/v1/topology/cluster-wc/kill", {"wait": 0})
    assert status == 200 and body["status"] == "ok"
    poll(cluster, lambda: ui.get("/api/v1/topology/summary")[1]["topologies"] == [],
         message="the topology to be gone")
    assert ui.get("/api/v1/topology/cluster-wc")[0] == 404


# -- in a real browser ------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


class Page:
    """The UI page in ``browser``: elements by ``data-testid``, and checks that wait while what
    they look for is not (or no longer) on the page."""

    def __init__(self, browser):
        self.browser = browser

    def find(self, testid: str):
        from selenium.webdriver.common.by import By

        return self.browser.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    @staticmethod
    def attempt(action):
        """``action``, or None while what it looks for is not (or no longer) on the page."""
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        def run():
            try:
                return action()
            except (NoSuchElementException, StaleElementReferenceException):
                return None
        return run


def screenshot(driver, name: str) -> None:
    """docs/img/<name>.png of the whole page (not just the window), when STREAMGALE_UI_SCREENSHOTS=1."""
    if os.environ.get("STREAMGALE_UI_SCREENSHOTS") != "1":
        return
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    (ROOT / "docs" / "img").mkdir(exist_ok=True)
    (ROOT / "docs" / "img" / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


@slow
def test_web_page_lists_shows_counts_and_deactivates(cluster, ui, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    page = Page(browser)
    find, attempt = page.find, page.attempt

    def value(testid):
        return int(find(testid).get_attribute("data-value"))

    def wait(action, message, timeout=30):
        return wait_for(attempt(action), timeout=timeout, interval=0.1, message=message)

    submit(cluster, tmp_path)
    running(cluster, ui)

    browser.get(ui.url + "/")
    wait(lambda: find("topology-link-cluster-wc"), "the topology on the cluster page")
    wait(lambda: find("cluster-slots").text == "2 / 2 / 4", "the slots on the cluster page")
    assert len(browser.find_elements(By.CSS_SELECTOR, '[data-testid^="supervisor-row-"]')) == 2
    assert find("topology-status-cluster-wc").text == "ACTIVE"
    assert find(f"nimbus-row-127.0.0.1:{cluster.nimbus_port}").text.endswith("leader")
    screenshot(browser, "ui-cluster")

    wait(lambda: find("topology-link-cluster-wc").click() or True, "clicking the topology link")
    wait(lambda: "#/topology/cluster-wc" in browser.current_url and find("status").text == "ACTIVE",
         "the topology page")
    for comp in COMPONENTS:
        wait(lambda: find(f"component-row-{comp}"), f"component {comp} on the topology page")
    nodes = browser.find_elements(By.CSS_SELECTOR, '[data-testid="topology-graph"] [data-testid^="node-"]')
    assert sorted(n.get_attribute("data-testid") for n in nodes) == ["node-count", "node-sentences", "node-sink",
                                                                      "node-split"]
    assert "fields [word]" in find("edge-split-count").text

    # the buttons that apply to an ACTIVE topology, Storm's windowed stats, the effective configuration
    wait(lambda: find("btn-activate").get_attribute("disabled") is not None, "Activate disabled while ACTIVE")
    assert find("btn-deactivate").is_enabled() and find("btn-kill").is_enabled()
    assert find("window-select").get_attribute("value") == "600"  # the default of `streamgale stats`
    assert len(browser.find_elements(By.CSS_SELECTOR, '[data-testid^="totals-row-"]')) == 4
    wait(lambda: value("totals-emitted-all") > 0, "the topology's emitted count in its stats table")
    assert find("config-value-topology.workers").text == "2"

    first = wait(lambda: value("emitted-sentences"), "a count on the topology page")
    wait(lambda: value("emitted-sentences") > first, "the spout's emitted count to rise on the page")
    wait(lambda: value("executed-count") > 0, "count's executed count on the page")
    screenshot(browser, "ui-topology")

    # the component page: one row per task
    wait(lambda: find("component-link-count").click() or True, "clicking the component link")
    wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, '[data-testid^="task-row-"]')) == 4,
         "count's 4 tasks on the component page")
    assert find("crumb-component").text == "count" and find("no-errors").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, '[data-testid^="executor-row-"]')) == 2
    assert find("output-row-default") and find("input-row-split-default")
    wait(lambda: value("input-emitted-split-default") > 0, "what split emitted, on count's input table")
    browser.back()
    wait(lambda: find("status").text == "ACTIVE", "the topology page again")

    # Deactivate: asks first; Cancel changes nothing, OK deactivates
    find("btn-deactivate").click()
    wait(lambda: find("confirm-dialog").is_displayed(), "the confirmation dialog")
    assert "Deactivate cluster-wc?" in find("confirm-title").text
    find("confirm-cancel").click()
    wait(lambda: not find("confirm-dialog").is_displayed(), "the dialog to close")
    assert ui.topology("cluster-wc")["status"] == "ACTIVE"
    find("btn-deactivate").click()
    wait(lambda: find("confirm-dialog").is_displayed(), "the confirmation dialog")
    find("confirm-ok").click()
    wait(lambda: find("status").text == "INACTIVE", "the status to become INACTIVE on the page")
    wait(lambda: find("btn-deactivate").get_attribute("disabled") is not None and find("btn-activate").is_enabled(),
         "Deactivate disabled and Activate enabled once INACTIVE")

    # a worker's log, one click from its row
    link = browser.find_elements(By.CSS_SELECTOR, '[data-testid^="worker-log-link-"]')[0]
    link.click()
    wait(lambda: "#/topology/cluster-wc/worker/" in browser.current_url and "streamgale" in find("worker-log").text,
         "the worker's log on its page")
    browser.back()
    wait(lambda: find("status").text == "INACTIVE", "the topology page again")
    assert ui.topology("cluster-wc")["status"] == "INACTIVE"
    assert "INACTIVE" in cluster.cli("list").stdout

    # A topology whose requirements.txt pip cannot satisfy: pip's error on its page (docs/deployment.md)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "topology.py").write_text(BROKEN_TOPOLOGY)
    (broken / "requirements.txt").write_text("streamgale-no-such-package==1.0\n")
    result = cluster.cli("submit", str(broken / "topology.py"), "--wait", "0")
    assert result.returncode == 0, result.stderr
    browser.get(ui.url + "/#/topology/broken")
    wait(lambda: "No matching distribution found for streamgale-no-such-package==1.0" in find("start-error-0").text,
         "pip's error on the topology page", timeout=60)
    assert "code package" in find("start-error-0").text
    screenshot(browser, "ui-start-error")
