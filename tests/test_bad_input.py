"""Bad input reaches counters a user sees: what workers drop on their ports (``stats``, per topology
and per worker), what nimbus and each supervisor refuse (``cluster``), all of it on ``/metrics``.

Pure parts first (the metrics store, the CLI's lines, the Prometheus text, the report's new
field), then real sockets: an RPC server counting garbage with security off, and a cluster in
one process whose nimbus, supervisor log endpoint and worker channel are sent garbage.
"""

from __future__ import annotations

import math
import random
import socket

import msgpack
import pytest
import zmq
from click.testing import CliRunner
from conftest import wait_for
from streamgale.cli import main
from streamgale.cli.observe_commands import bad_input_line, daemon_bad_input_lines, stats_table
from streamgale.nimbus.metrics import MalformedReport, MetricsStore

from streamgale.dev.inprocess import InProcessCluster
from streamgale.ui import prometheus
from streamgale.wire import protocol as p
from streamgale.wire.rpc import RpcServer

pytestmark = pytest.mark.timeout(60)


def report(pid: int, frames: int, entries: int, slot: str = "s:1", executed: int = 1) -> dict:
    return {"topology_id": "t", "slot": slot, "host": "h", "port": 1, "pid": pid, "cpu_percent": 1.0,
            "rss_mb": 10.0, "uptime_s": 1.0,
            "transport": {"received": 5, "sent": 5, "dropped_frames": frames, "dropped_entries": entries},
            "tasks": {"3": {"component": "count", "kind": "bolt", "executed": executed, "acked": executed}}}


# -- the metrics store ------------------------------------------------------------------------

def test_a_topologys_bad_input_is_summed_over_workers_and_restarts():
    m = MetricsStore()
    assert m.stats("t", 0)["bad_input"] == {"dropped_frames": 0, "dropped_entries": 0, "denied_keys": 0}
    m.add(report(10, 2, 5), now=0)
    m.add(report(10, 3, 7), now=2)  # cumulative: +1, +2
    m.add(report(20, 1, 1, slot="s:2"), now=2)  # another worker
    m.add(report(11, 4, 0), now=4)  # slot s:1 restarted: its counters began again
    assert m.stats("t", 4)["bad_input"] == {"dropped_frames": 3 + 1 + 4, "dropped_entries": 7 + 1 + 0,
                                            "denied_keys": 0}
    m.forget("t")
    assert m.stats("t", 4)["bad_input"]["dropped_frames"] == 0


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(pid="7"), "'pid'"),
    (lambda r: r.update(topology_id=None), "'topology_id'"),
    (lambda r: r["transport"].update(dropped_frames=math.nan), "dropped_frames"),
    (lambda r: r["tasks"]["3"].update(executed=math.inf), "'executed'"),
    (lambda r: r["tasks"]["3"].update(acked=-1), "'acked'"),
    (lambda r: r["tasks"].update({"x": {}}), "task id 'x'"),
    (lambda r: r["tasks"]["3"].update(emitted_by_stream={"default": "9"}), "emitted_by_stream"),
    (lambda r: r.update(tasks=[1, 2]), "'tasks'"),
])
def test_a_malformed_report_is_refused_whole_and_the_store_still_answers(change, field):
    m = MetricsStore()
    m.add(report(10, 1, 1, executed=4), now=0)
    bad = report(10, 9, 9, executed=8)
    change(bad)
    with pytest.raises(MalformedReport, match=field):
        m.add(bad, now=1)
    s = m.stats("t", 1)  # nothing of the bad report was kept, and stats still work
    assert s["components"]["count"]["windows"]["all"]["executed"] == 4
    assert s["bad_input"]["dropped_frames"] == 1
    msgpack.packb(s)  # what nimbus answers can be encoded


def test_a_components_own_values_beyond_int64_or_not_finite_are_left_out():
    m = MetricsStore()
    r = report(10, 0, 0)
    r["tasks"]["3"].update(big=1 << 70, nan=math.nan, fine=3, text="x" * 300)
    m.add(r, now=0)
    assert m.stats("t", 0)["tasks"]["3"]["metrics"] == {"fine": 3}


# -- what the CLI prints ----------------------------------------------------------------------

STATS = {"components": {}, "tasks": {}, "errors": {}, "topology": {"name": "wc", "id": "wc-1", "status": "ACTIVE",
                                                                   "workers": 1},
         "workers": [], "bad_input": {"dropped_frames": 0, "dropped_entries": 0, "denied_keys": 0}}


def test_stats_show_bad_input_only_when_there_is_some():
    assert "bad input" not in stats_table(STATS, "600")
    assert "bad input" not in stats_table({k: v for k, v in STATS.items() if k != "bad_input"}, "600")  # older nimbus
    text = stats_table({**STATS, "bad_input": {"dropped_frames": 1200, "dropped_entries": 3, "denied_keys": 0}}, "600")
    assert "bad input: 1,200 frames dropped, 3 entries dropped" in text.splitlines()
    assert bad_input_line({"dropped_frames": 0, "dropped_entries": 0, "denied_keys": 2}) == (
        "bad input: 0 frames dropped, 0 entries dropped, 2 peers' keys denied")


BAD_INPUT = [
    {"daemon": "nimbus", "id": "n1:6627", "host": "n1", "rejected_requests": 3, "refused_handshakes": 12,
     "denied_keys": 0},
    {"daemon": "supervisor", "id": "s1", "host": "h", "rejected_requests": 0, "refused_handshakes": 5,
     "denied_keys": 1, "malformed_messages": 2, "age_s": 0.5},
]


def test_cluster_lines_name_each_daemon_and_its_counts():
    assert daemon_bad_input_lines(BAD_INPUT) == [
        "bad input at nimbus n1:6627: 3 rejected requests, 12 refused handshakes, 0 denied keys",
        "bad input at supervisor s1 on h: 0 rejected requests, 5 refused handshakes, 1 denied keys, "
        "2 malformed worker-channel messages",
    ]


# -- /metrics ---------------------------------------------------------------------------------

def test_prometheus_exposes_daemon_and_topology_bad_input_as_counters():
    cluster = {"leader": "n1:6627", "nimbuses": ["n1:6627"], "topologies": 1, "supervisors": [],
               "bad_input": BAD_INPUT}
    row = {"id": "wc-1", "name": "wc", "status": "ACTIVE", "workers": 1, "executors": 1, "tasks": 1, "uptime": 1.0}
    stats = {**STATS, "bad_input": {"dropped_frames": 7, "dropped_entries": 2, "denied_keys": 0},
             "workers": [{"host": "h", "port": 6700, "pid": 1, "rss_mb": 1.0, "cpu_percent": 0.0,
                          "transport": {"dropped_frames": 7, "dropped_entries": 2, "denied_keys": 0}}]}
    text = prometheus.render(cluster, [(row, stats)])
    lines = set(text.splitlines())
    assert "# TYPE streamgale_rejected_requests_total counter" in lines
    assert 'streamgale_rejected_requests_total{daemon="nimbus",id="n1:6627",host="n1"} 3' in lines
    assert 'streamgale_refused_handshakes_total{daemon="supervisor",id="s1",host="h"} 5' in lines
    assert 'streamgale_malformed_channel_messages_total{daemon="supervisor",id="s1",host="h"} 2' in lines
    assert not any(line.startswith('streamgale_malformed_channel_messages_total{daemon="nimbus"') for line in lines)
    assert 'streamgale_topology_dropped_frames_total{topology="wc"} 7' in lines
    assert 'streamgale_topology_dropped_entries_total{topology="wc"} 2' in lines
    assert 'streamgale_worker_dropped_frames_total{topology="wc",host="h",port="6700"} 7' in lines
    assert 'streamgale_worker_denied_keys_total{topology="wc",host="h",port="6700"} 0' in lines
    prometheus.render({**cluster, "bad_input": None}, [(row, {**stats, "bad_input": None})])  # an older nimbus


# -- the supervisor's report ------------------------------------------------------------------

def test_the_report_carries_counters_only_when_non_zero_so_an_older_nimbus_reads_it():
    assert "counters" not in p.SupervisorReport("s1").args()
    assert "counters" not in msgpack.unpackb(p.SupervisorReport("s1", counters={}).encode(1))["args"]
    sent = p.SupervisorReport("s1", counters={"rejected_requests": 2, "refused_handshakes": 0})
    decoded = p.decode_request(sent.encode(3))
    assert decoded == sent and decoded.counters == {"rejected_requests": 2, "refused_handshakes": 0}
    assert p.decode_request(p.SupervisorReport("s1").encode(4)).counters == {}  # from an older supervisor
    for bad in ({"x": -1}, {"x": 1.5}, {"x": True}, [1], {str(i): 1 for i in range(p.MAX_COUNTERS + 1)}):
        with pytest.raises(p.ProtocolError, match="field 'counters'"):
            p.SupervisorReport("s1", counters=bad)


# -- real sockets -----------------------------------------------------------------------------

def garbage(port: int) -> None:
    """Random bytes, a ZMTP greeting then garbage, and a connection opened and dropped."""
    greeting = b"\xff" + bytes(8) + b"\x7f\x03\x00NULL" + bytes(16) + b"\x00" + bytes(31)
    for data in (random.Random(1).randbytes(2048), greeting + b"\x04\xffgarbage" * 40, b""):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(data)


def test_an_rpc_server_counts_garbage_with_security_off():
    context = zmq.Context()
    server = RpcServer(context, "127.0.0.1", 0)
    try:
        garbage(server.port)

        def counted() -> bool:
            server.poll(0.05)
            return server.refused_handshakes >= 2 and server.rejected >= 1
        wait_for(counted, timeout=10, message="the garbage counted as refused handshakes and rejected frames")
    finally:
        server.close()
        context.destroy(linger=0)


def test_nimbus_and_supervisors_report_what_they_refused(tmp_path):
    with InProcessCluster(supervisors=1, slots=1, directory=tmp_path / "cluster") as c:
        c.wait(lambda: c.leader() is not None and len(c.leader().state.supervisors()) == 1, message="ready")
        nimbus, supervisor = c.leader(), c.supervisors[0]
        assert nimbus is not None and supervisor is not None and supervisor.log_server is not None
        with c.client() as client:
            before = client.cluster_info()["bad_input"]
        assert [d["daemon"] for d in before] == ["nimbus"]  # a supervisor with nothing refused sends nothing
        assert before[0]["rejected_requests"] == before[0]["refused_handshakes"] == 0

        garbage(nimbus.port)
        garbage(supervisor.log_server.port)
        dealer = c.context.socket(zmq.DEALER)  # a peer of the worker channel with no slot's routing id
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect("inproc://supervisor-0")
        dealer.send(b"not msgpack")
        dealer.close()

        def reported() -> dict | None:
            with c.client() as client:
                info = client.cluster_info()
            daemons = {d["daemon"]: d for d in info["bad_input"]}
            n, s = daemons.get("nimbus", {}), daemons.get("supervisor", {})
            done = (n.get("rejected_requests", 0) >= 1 and n.get("refused_handshakes", 0) >= 2
                    and s.get("rejected_requests", 0) >= 1 and s.get("refused_handshakes", 0) >= 2
                    and s.get("malformed_messages", 0) >= 1)
            return info if done else None
        info = c.wait(reported, timeout=20, message="nimbus and the supervisor to count the garbage")
        sup = next(d for d in info["bad_input"] if d["daemon"] == "supervisor")
        assert sup["id"] == supervisor.id and sup["host"] == "node-0"

        result = CliRunner().invoke(main.cli, ["--nimbus", f"127.0.0.1:{c.nimbus_ports[0]}", "cluster"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("bad input at ")]
        assert lines[0].startswith(f"bad input at nimbus 127.0.0.1:{c.nimbus_ports[0]}: ")
        assert lines[1].startswith(f"bad input at supervisor {supervisor.id} on node-0: ")
        assert "malformed worker-channel messages" in lines[1]
