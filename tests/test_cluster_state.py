"""ClusterState and ZooKeeperServer against a real ZooKeeper (no mocks).

Fixtures (zk_fixtures.py): one server per session, a fresh root per test.
Every wait is a bounded poll.
"""

from __future__ import annotations

import os
import threading

import pytest
from conftest import wait_for
from zk_fixtures import drop_connection, expire_session

from streamgale.cluster.state import (CHUNK_SIZE, ClusterState, ClusterStateError, NotLeader,
                                      StaleAssignment, TopologyExists)
from streamgale.cluster.records import (ACTIVE, INACTIVE, Assignment, ErrorRecord, SlotAssignment, SupervisorInfo,
                                TopologyRecord)
from streamgale.dev.ports import free_port
from streamgale.dev.zookeeper_server import ZooKeeperServer, ZooKeeperServerError


def supervisor(sid: str = "sup-1") -> SupervisorInfo:
    return SupervisorInfo(sid, "10.0.0.1", (6700, 6701), cpu_count=4, memory_mb=8192, started_at=1.5)


def topology(tid: str = "wc-1", name: str = "wc") -> TopologyRecord:
    spec = {"components": {"split": {"tasks": 2, "parallelism": 2}}}
    return TopologyRecord(tid, name, ACTIVE, spec, {"topology.workers": 1}, "d" * 64, "wc.py", 1,
                          {"split": 2}, 100.0)


def assignment(tid: str = "wc-1", port: int = 6700, version: int = -1) -> Assignment:
    slot = SlotAssignment("sup-1", "10.0.0.1", port, (("split", (1, 2)),))
    return Assignment(tid, "d" * 64, {slot.slot: slot}, 5.0, version)


class Recorder:
    """Collects callback values across kazoo threads."""

    def __init__(self):
        self.values = []
        self.lock = threading.Lock()

    def __call__(self, value=None):
        with self.lock:
            self.values.append(value)

    @property
    def last(self):
        with self.lock:
            return self.values[-1] if self.values else None


# -- supervisors and nimbuses ---------------------------------------------------------------------


def test_supervisor_appears_for_another_client_and_vanishes_when_its_session_closes(make_cluster_state):
    a, b = make_cluster_state(), make_cluster_state()
    seen = Recorder()
    b.watch_supervisors(seen)
    assert seen.last == {}
    a.register_supervisor(supervisor())
    wait_for(lambda: "sup-1" in (seen.last or {}), timeout=5, message="supervisor to appear")
    assert seen.last["sup-1"] == supervisor()
    assert b.supervisors() == {"sup-1": supervisor()}
    a.close()
    wait_for(lambda: seen.last == {}, timeout=5, message="supervisor to vanish")
    assert b.supervisors() == {}


def test_register_replaces_a_stale_node_and_unregister_removes_it(cluster_state, zk_client, zk_root):
    zk_client.create(f"{zk_root}/supervisors/sup-1", b"left by a dead session", ephemeral=True)
    cluster_state.register_supervisor(supervisor())
    assert cluster_state.supervisors() == {"sup-1": supervisor()}
    _, stat = zk_client.get(f"{zk_root}/supervisors/sup-1")
    assert stat.ephemeralOwner == cluster_state._zk.client_id[0]
    cluster_state.unregister_supervisor("sup-1")
    assert cluster_state.supervisors() == {}


def test_ephemerals_are_recreated_after_the_session_expires(make_cluster_state):
    a, b = make_cluster_state(), make_cluster_state()
    states = Recorder()
    a.add_state_listener(states)
    a.register_supervisor(supervisor())
    a.register_nimbus("10.0.0.9:6627")
    old_session = a._zk.client_id[0]
    expire_session(a)
    wait_for(lambda: "LOST" in states.values and a.connected, timeout=10, message="a new session")
    assert a._zk.client_id[0] != old_session
    wait_for(lambda: b.supervisors() == {"sup-1": supervisor()}, timeout=5, message="re-registration")
    wait_for(lambda: b.nimbuses() == ["10.0.0.9:6627"], timeout=5, message="nimbus re-registration")
    assert states.values[-1] == "CONNECTED"


# -- topologies -----------------------------------------------------------------------------------


def test_topology_create_rejects_duplicates_update_is_compare_and_set_and_delete_removes_all(
        make_cluster_state):
    a, b = make_cluster_state(), make_cluster_state()
    a.create_topology(topology())
    assert b.topology("wc-1") == topology()
    assert b.topologies() == {"wc-1": topology()}
    with pytest.raises(TopologyExists, match="id 'wc-1'"):
        a.create_topology(topology())
    with pytest.raises(TopologyExists, match="named 'wc'"):
        a.create_topology(topology("wc-2"))

    calls = []

    def deactivate(rec: TopologyRecord) -> TopologyRecord:
        calls.append(rec)
        if len(calls) == 1:  # someone else writes between our read and our write
            b.update_topology("wc-1", lambda r: r.with_(workers=3))
        return rec.with_(status=INACTIVE)

    updated = a.update_topology("wc-1", deactivate)
    assert len(calls) == 2 and calls[1].workers == 3
    assert updated == b.topology("wc-1") == topology().with_(status=INACTIVE, workers=3)
    assert a.update_topology("wc-1", lambda r: None) == updated
    assert a.update_topology("nope", lambda r: r) is None

    leadership = a.elect_leader("n1:6627", lambda: None, lambda: None)
    wait_for(lambda: leadership.is_leader, timeout=5, message="election")
    a.put_code("wc-1", b"code")
    a.set_assignment(assignment(), leadership)
    a.report_error("wc-1", ErrorRecord("split", 1, "h", 6700, 1.0, "ValueError: x"))
    a.delete_topology("wc-1")
    assert (b.topology("wc-1"), b.assignment("wc-1"), b.errors("wc-1")) == (None, None, {})
    with pytest.raises(ClusterStateError, match="no code package"):
        b.get_code("wc-1")
    a.create_topology(topology("wc-3"))  # the name is free again


def test_watch_topology_and_topologies(make_cluster_state):
    a, b = make_cluster_state(), make_cluster_state()
    one, every = Recorder(), Recorder()
    b.watch_topology("wc-1", one)
    b.watch_topologies(every)
    assert one.last is None and every.last == {}
    a.create_topology(topology())
    wait_for(lambda: one.last == topology() and every.last == {"wc-1": topology()}, timeout=5,
             message="topology watches")
    a.update_topology("wc-1", lambda r: r.with_(status=INACTIVE))
    wait_for(lambda: one.last is not None and one.last.status == INACTIVE, timeout=5, message="update")
    a.delete_topology("wc-1")
    wait_for(lambda: one.values[-1] is None and every.last == {}, timeout=5, message="deletion")


# -- code packages ----------------------------------------------------------------------------------


def test_code_round_trips_in_chunks_and_corruption_is_detected(cluster_state, zk_client, zk_root):
    data = os.urandom(1536 * 1024)  # 1.5 MiB: three full chunks
    digest = cluster_state.put_code("wc-1", data)
    assert len(digest) == 64
    assert sorted(zk_client.get_children(f"{zk_root}/code/wc-1")) == [
        "chunk-00000", "chunk-00001", "chunk-00002", "meta"]
    assert cluster_state.get_code("wc-1") == data
    cluster_state.put_code("wc-1", b"smaller")  # replaces the old package whole
    assert cluster_state.get_code("wc-1") == b"smaller"
    cluster_state.put_code("wc-1", data)
    flipped = bytes([data[CHUNK_SIZE] ^ 0xFF]) + data[CHUNK_SIZE + 1:2 * CHUNK_SIZE]  # same size, one byte off
    zk_client.set(f"{zk_root}/code/wc-1/chunk-00001", flipped)
    with pytest.raises(ClusterStateError, match="corrupt"):
        cluster_state.get_code("wc-1")
    cluster_state.delete_code("wc-1")
    with pytest.raises(ClusterStateError, match="no code package"):
        cluster_state.get_code("wc-1")


def test_code_size_is_capped(make_cluster_state):
    state = make_cluster_state(max_code_size=1000)
    with pytest.raises(ClusterStateError, match="1001 bytes; the limit is 1000"):
        state.put_code("wc-1", b"x" * 1001)


# -- leader election and fenced assignments --------------------------------------------------------


def test_one_of_two_contenders_leads_and_the_other_takes_over_when_it_goes(make_cluster_state):
    a, b = make_cluster_state(), make_cluster_state()
    events = Recorder()
    la = a.elect_leader("n1:6627", lambda: events("n1 elected"), lambda: events("n1 deposed"))
    lb = b.elect_leader("n2:6627", lambda: events("n2 elected"), lambda: events("n2 deposed"))
    wait_for(lambda: la.is_leader, timeout=5, message="first contender to lead")
    assert not lb.is_leader
    assert a.leader_address() == b.leader_address() == "n1:6627"
    a.close()
    wait_for(lambda: lb.is_leader, timeout=5, message="second contender to take over")
    assert b.leader_address() == "n2:6627"
    wait_for(lambda: "n1 deposed" in events.values, timeout=5, message="n1's on_deposed")
    # each contender's own callbacks alternate; the two contenders' are not ordered
    assert [e for e in events.values if e.startswith("n1")] == ["n1 elected", "n1 deposed"]
    assert [e for e in events.values if e.startswith("n2")] == ["n2 elected"]


def test_fenced_write_from_a_deposed_leader_raises_not_leader(make_cluster_state, zk_client):
    a, b = make_cluster_state(), make_cluster_state()
    la = a.elect_leader("n1:6627", lambda: None, lambda: None)
    wait_for(lambda: la.is_leader, timeout=5, message="election")
    a.set_assignment(assignment(), la)

    # The server-side fence: the leader still believes it leads (its watch is held
    # back) but its election node is gone, as after an expired session.
    with la._lock:
        zk_client.delete(la.node_path)
        assert la._leader
        with pytest.raises(NotLeader):
            a.set_assignment(assignment(port=6701), la)
        with pytest.raises(NotLeader):
            a.delete_assignment("wc-1", la)
    wait_for(lambda: not la.is_leader, timeout=5, message="deposition noticed")
    with pytest.raises(NotLeader):
        a.set_assignment(assignment(port=6701), la)
    assert b.assignment("wc-1") == assignment()


def test_leader_stops_trusting_itself_while_suspended_and_reenters_after_loss(make_cluster_state):
    a, b = make_cluster_state(), make_cluster_state()
    la = a.elect_leader("n1:6627", lambda: None, lambda: None)
    wait_for(lambda: la.is_leader, timeout=5, message="election")
    lb = b.elect_leader("n2:6627", lambda: None, lambda: None)
    trust_when_suspended = Recorder()
    a.add_state_listener(lambda s: trust_when_suspended(la.is_leader) if s == "SUSPENDED" else None)

    node = la.node_path
    drop_connection(a)
    wait_for(lambda: trust_when_suspended.values, timeout=5, message="SUSPENDED")
    assert trust_when_suspended.values == [False]
    wait_for(lambda: la.is_leader, timeout=10, message="leadership back after reconnecting")
    assert la.node_path == node  # same session, same node

    expire_session(a)  # the node is gone: n2 leads, n1 re-enters behind it
    wait_for(lambda: lb.is_leader, timeout=10, message="n2 to lead")
    wait_for(lambda: la.node_path != node and a.connected, timeout=10, message="n1 to re-enter")
    assert not la.is_leader and b.leader_address() == "n2:6627"
    assert len(b._contenders()) == 2
    la.cancel()
    wait_for(lambda: len(b._contenders()) == 1, timeout=5, message="n1 to leave")


def test_conditional_assignment_write_with_a_stale_version_raises(cluster_state):
    leadership = cluster_state.elect_leader("n1:6627", lambda: None, lambda: None)
    wait_for(lambda: leadership.is_leader, timeout=5, message="election")
    first = cluster_state.set_assignment(assignment(), leadership)
    assert first.version == 0 == cluster_state.assignment("wc-1").version
    second = cluster_state.set_assignment(assignment(port=6701, version=0), leadership)
    assert second.version == 1
    with pytest.raises(StaleAssignment):
        cluster_state.set_assignment(assignment(port=6702, version=0), leadership)
    with pytest.raises(StaleAssignment):
        cluster_state.set_assignment(assignment("other", version=3), leadership)
    assert cluster_state.assignment("wc-1") == assignment(port=6701)
    assert cluster_state.assignments() == {"wc-1": assignment(port=6701)}
    cluster_state.delete_assignment("wc-1", leadership)
    cluster_state.delete_assignment("wc-1", leadership)  # idempotent
    assert cluster_state.assignment("wc-1") is None


def test_assignment_watches_see_every_change(make_cluster_state):
    nimbus, supervisor_side = make_cluster_state(), make_cluster_state()
    leadership = nimbus.elect_leader("n1:6627", lambda: None, lambda: None)
    wait_for(lambda: leadership.is_leader, timeout=5, message="election")
    every, one = Recorder(), Recorder()
    supervisor_side.watch_assignments(every)
    supervisor_side.watch_assignment("wc-1", one)
    assert every.last == {} and one.last is None

    nimbus.set_assignment(assignment(), leadership)
    wait_for(lambda: every.last == {"wc-1": assignment()} and one.last == assignment(), timeout=5,
             message="creation")
    nimbus.set_assignment(assignment("wc-2"), leadership)
    wait_for(lambda: set(every.last) == {"wc-1", "wc-2"}, timeout=5, message="second topology")
    nimbus.set_assignment(assignment(port=6701, version=0), leadership)
    wait_for(lambda: every.last["wc-1"] == assignment(port=6701) and every.last["wc-1"].version == 1
             and one.last == assignment(port=6701), timeout=5, message="update")
    nimbus.delete_assignment("wc-1", leadership)
    wait_for(lambda: set(every.last) == {"wc-2"} and one.values[-1] is None, timeout=5, message="deletion")
    nimbus.set_assignment(assignment(), leadership)  # back again: watched again
    wait_for(lambda: set(every.last) == {"wc-1", "wc-2"} and one.last == assignment(), timeout=5,
             message="re-creation")


# -- errors and malformed data ----------------------------------------------------------------------


def test_errors_are_trimmed_to_the_newest_ten_per_component(cluster_state):
    cluster_state.create_topology(topology())
    for i in range(13):
        cluster_state.report_error("wc-1", ErrorRecord("split", 1, "h", 6700, float(i), f"ValueError: {i}"))
    cluster_state.report_error("wc-1", ErrorRecord("odd/name", 2, "h", 6700, 1.0, "KeyError: k"))
    errors = cluster_state.errors("wc-1")
    assert [e.message for e in errors["split"]] == [f"ValueError: {i}" for i in range(3, 13)]
    assert [e.message for e in errors["odd/name"]] == ["KeyError: k"]
    assert cluster_state.errors("other") == {}


def test_errors_about_a_deleted_topology_leave_nothing_behind(cluster_state, zk_client, zk_root):
    cluster_state.create_topology(topology())
    cluster_state.delete_topology("wc-1")
    cluster_state.report_error("wc-1", ErrorRecord("__worker", -1, "h", 6700, 1.0, "worker died"))
    assert cluster_state.errors("wc-1") == {}
    assert zk_client.get_children(f"{zk_root}/errors") == []


def test_malformed_znodes_are_skipped_and_never_break_watchers(make_cluster_state, zk_client, zk_root):
    a, b = make_cluster_state(), make_cluster_state()
    leadership = a.elect_leader("n1:6627", lambda: None, lambda: None)
    wait_for(lambda: leadership.is_leader, timeout=5, message="election")
    zk_client.create(f"{zk_root}/supervisors/junk", b"\xc1 not msgpack", ephemeral=True)
    zk_client.create(f"{zk_root}/topologies/junk", b"\x93\x01\x02\x03")
    zk_client.create(f"{zk_root}/assignments/wc-1", b"junk")
    zk_client.create(f"{zk_root}/errors/wc-1/split/e_", b"junk", sequence=True, makepath=True)

    sups, tops, asgs, one = Recorder(), Recorder(), Recorder(), Recorder()
    b.watch_supervisors(sups)
    b.watch_topologies(tops)
    b.watch_assignments(asgs)
    b.watch_assignment("wc-1", one)
    assert (sups.last, tops.last, asgs.last, one.values) == ({}, {}, {}, [])
    assert (b.supervisors(), b.topologies(), b.assignments(), b.assignment("wc-1")) == ({}, {}, {}, None)
    assert b.topology("junk") is None and b.errors("wc-1") == {}

    a.register_supervisor(supervisor())
    a.create_topology(topology())
    a.set_assignment(assignment(), leadership)  # overwrites the junk
    wait_for(lambda: sups.last == {"sup-1": supervisor()} and tops.last == {"wc-1": topology()}
             and asgs.last == {"wc-1": assignment()} and one.last == assignment(), timeout=5,
             message="valid records through every watch")
    zk_client.set(f"{zk_root}/supervisors/sup-1", b"junk again")
    wait_for(lambda: sups.last == {}, timeout=5, message="corrupted record dropped")
    with pytest.raises(ClusterStateError, match="malformed"):
        b.update_topology("junk", lambda r: r)


# -- connection and server lifecycle ---------------------------------------------------------------


def test_start_fails_clearly_when_zookeeper_is_unreachable():
    port = free_port()
    state = ClusterState([f"127.0.0.1:{port}"], "/x", session_timeout=2.0)
    with pytest.raises(ClusterStateError, match=f"cannot reach ZooKeeper at 127.0.0.1:{port} within 0.5 s"):
        state.start(timeout=0.5)
    state.close()


def test_server_restart_keeps_data_on_the_same_port(tmp_path):
    with ZooKeeperServer(data_dir=tmp_path / "zk") as server:
        port = server.port
        with ClusterState([server.address], "/r", session_timeout=5.0) as state:
            state.create_topology(topology())
        server.stop()
        assert not server.running
        server.start()
        assert server.port == port
        with ClusterState([server.address], "/r", session_timeout=5.0) as state:
            assert state.topology("wc-1") == topology()
    assert (tmp_path / "zk" / "zoo.cfg").exists()  # a given data dir is kept


def test_server_refuses_a_port_in_use(zookeeper):
    server = ZooKeeperServer(port=zookeeper.port)
    try:
        with pytest.raises(ZooKeeperServerError, match="port is in use"):
            server.start()
    finally:
        server.close()


def test_server_reports_a_missing_or_broken_installation(monkeypatch):
    monkeypatch.setenv("ZOOKEEPER_CLASSPATH", "/nonexistent/zookeeper.jar")
    server = ZooKeeperServer()
    try:
        with pytest.raises(ZooKeeperServerError, match="exited with status") as info:
            server.start(timeout=30)
        assert "zookeeper.log" in str(info.value)
    finally:
        server.close()
    assert not server.data_dir.exists()  # a temp dir it made is deleted
