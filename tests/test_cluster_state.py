"""ClusterState on a real ZooKeeper and on the in-memory one, by the same assertions (no mocks).

The ``backend`` fixture runs each behaviour test twice: on ZooKeeper
(zk_fixtures.py: one server per session, a fresh root per test) and on a
MemoryZooKeeper, which proves the fake faithful. On ZooKeeper every wait is
a bounded poll; on the memory store it is ``settle()`` and then the check.
ZooKeeperServer and ZkStorage's own behaviour are tested on ZooKeeper only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest
from conftest import wait_for
from memory_fixtures import memory_zookeeper  # noqa: F401 - a fixture

from streamgale.cluster import watches
from streamgale.cluster.election import contenders
from streamgale.cluster.records import (
    ACTIVE,
    INACTIVE,
    Assignment,
    ErrorRecord,
    SlotAssignment,
    SupervisorInfo,
    TopologyRecord,
)
from streamgale.cluster.state import (
    CHUNK_SIZE,
    ClusterState,
    ClusterStateError,
    FencedOut,
    StaleAssignment,
    TopologyExists,
    open_cluster_state,
)
from streamgale.cluster.storage import Storage
from streamgale.cluster.zk_storage import ZkStorage
from streamgale.config import Config
from streamgale.dev.ports import free_port
from streamgale.dev.zookeeper_server import ZooKeeperServer, ZooKeeperServerError


def supervisor(sid: str = "sup-1") -> SupervisorInfo:
    return SupervisorInfo(sid, "10.0.0.1", (6700, 6701), cpu_count=4, memory_mb=8192, started_at=1.5)


def topology(tid: str = "wc-1", name: str = "wc") -> TopologyRecord:
    spec = {"components": {"split": {"kind": "bolt", "tasks": 2, "parallelism": 2}}}
    return TopologyRecord(tid, name, ACTIVE, spec, {"topology.workers": 1}, "d" * 64, "wc.py", 1,
                          {"split": 2}, 100.0)


def assignment(tid: str = "wc-1", port: int = 6700, version: int = -1) -> Assignment:
    slot = SlotAssignment("sup-1", "10.0.0.1", port, (("split", (1, 2)),))
    return Assignment(tid, "d" * 64, {slot.slot: slot}, 5.0, version)


class Recorder:
    """Collects callback values across storage threads."""

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


class Backend:
    """Started ClusterStates on one store (``make``), a raw client of it (``raw``), its root,
    and ``wait(predicate, message)``: until ``predicate()`` holds, or fail."""

    def __init__(self, make: Callable[..., ClusterState], raw: Storage, root: str,
                 wait: Callable[[Callable[[], object], str], None]):
        self.make, self.raw, self.root, self.wait = make, raw, root, wait


@pytest.fixture(params=["zookeeper", "memory"])
def backend(request) -> Backend:
    if request.param == "zookeeper":
        return Backend(request.getfixturevalue("make_cluster_state"), request.getfixturevalue("zk_storage"),
                       request.getfixturevalue("zk_root"),
                       lambda predicate, message: wait_for(predicate, timeout=10, message=message))
    server = request.getfixturevalue("memory_zookeeper")

    def make(**kw) -> ClusterState:
        state = ClusterState(server.client(), "/streamgale", **kw)
        state.start()
        return state

    def settled(predicate: Callable[[], object], message: str) -> None:
        server.settle()
        assert predicate(), f"{message}: not so once every callback had run"

    raw = server.client()
    raw.start()
    return Backend(make, raw, "/streamgale", settled)


# -- supervisors and nimbuses ---------------------------------------------------------------------


def test_supervisor_appears_for_another_client_and_vanishes_when_its_session_closes(backend):
    a, b = backend.make(), backend.make()
    seen = Recorder()
    b.watch_supervisors(seen)
    assert seen.last == {}
    a.register_supervisor(supervisor())
    backend.wait(lambda: "sup-1" in (seen.last or {}), "supervisor to appear")
    assert seen.last["sup-1"] == supervisor()
    assert b.supervisors() == {"sup-1": supervisor()}
    a.close()
    backend.wait(lambda: seen.last == {}, "supervisor to vanish")
    assert b.supervisors() == {}


def test_register_replaces_a_stale_node_and_unregister_removes_it(backend):
    state = backend.make()
    backend.raw.create(f"{backend.root}/supervisors/sup-1", b"left by a dead session", ephemeral=True)
    state.register_supervisor(supervisor())
    assert state.supervisors() == {"sup-1": supervisor()}
    _, stat = backend.raw.get(f"{backend.root}/supervisors/sup-1")
    assert stat.ephemeral_owner == state.storage.session_id
    state.unregister_supervisor("sup-1")
    assert state.supervisors() == {}


def test_ephemerals_are_recreated_after_the_session_expires(backend):
    a, b = backend.make(), backend.make()
    states = Recorder()
    a.add_state_listener(states)
    a.register_supervisor(supervisor())
    a.register_nimbus("10.0.0.9:6627")
    old_session = a.storage.session_id
    a.storage.expire_session()
    backend.wait(lambda: "LOST" in states.values and a.connected, "a new session")
    assert a.storage.session_id != old_session
    backend.wait(lambda: b.supervisors() == {"sup-1": supervisor()}, "re-registration")
    backend.wait(lambda: b.nimbuses() == ["10.0.0.9:6627"], "nimbus re-registration")
    assert states.values[-1] == "CONNECTED"


# -- topologies -----------------------------------------------------------------------------------


def test_topology_create_rejects_duplicates_update_is_compare_and_set_and_delete_removes_all(backend):
    a, b = backend.make(), backend.make()
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
    backend.wait(lambda: leadership.is_leader, "election")
    a.put_code("wc-1", b"code")
    a.set_assignment(assignment(), leadership)
    a.report_error("wc-1", ErrorRecord("split", 1, "h", 6700, 1.0, "ValueError: x"))
    a.delete_topology("wc-1")
    assert (b.topology("wc-1"), b.assignment("wc-1"), b.errors("wc-1")) == (None, None, {})
    with pytest.raises(ClusterStateError, match="no code package"):
        b.get_code("wc-1")
    a.create_topology(topology("wc-3"))  # the name is free again


def test_watch_topology_and_topologies(backend):
    a, b = backend.make(), backend.make()
    one, every = Recorder(), Recorder()
    b.watch_topology("wc-1", one)
    b.watch_topologies(every)
    assert one.last is None and every.last == {}
    a.create_topology(topology())
    backend.wait(lambda: one.last == topology() and every.last == {"wc-1": topology()}, "topology watches")
    a.update_topology("wc-1", lambda r: r.with_(status=INACTIVE))
    backend.wait(lambda: one.last is not None and one.last.status == INACTIVE, "update")
    a.delete_topology("wc-1")
    backend.wait(lambda: one.values[-1] is None and every.last == {}, "deletion")


# -- code packages ----------------------------------------------------------------------------------


def test_code_round_trips_in_chunks_and_corruption_is_detected(backend):
    state, code = backend.make(), f"{backend.root}/code/wc-1"
    data = os.urandom(1536 * 1024)  # 1.5 MiB: three full chunks
    digest = state.put_code("wc-1", data)
    assert len(digest) == 64
    assert sorted(backend.raw.children(code)) == ["chunk-00000", "chunk-00001", "chunk-00002", "meta"]
    assert state.get_code("wc-1") == data
    state.put_code("wc-1", b"smaller")  # replaces the old package whole
    assert state.get_code("wc-1") == b"smaller"
    state.put_code("wc-1", data)
    flipped = bytes([data[CHUNK_SIZE] ^ 0xFF]) + data[CHUNK_SIZE + 1:2 * CHUNK_SIZE]  # same size, one byte off
    backend.raw.set(f"{code}/chunk-00001", flipped)
    with pytest.raises(ClusterStateError, match="corrupt"):
        state.get_code("wc-1")
    state.delete_code("wc-1")
    with pytest.raises(ClusterStateError, match="no code package"):
        state.get_code("wc-1")


def test_code_size_is_capped(backend):
    state = backend.make(max_code_size=1000)
    with pytest.raises(ClusterStateError, match="1001 bytes; the limit is 1000"):
        state.put_code("wc-1", b"x" * 1001)


# -- leader election and fenced assignments --------------------------------------------------------


def test_one_of_two_contenders_leads_and_the_other_takes_over_when_it_goes(backend):
    a, b = backend.make(), backend.make()
    events = Recorder()
    la = a.elect_leader("n1:6627", lambda: events("n1 elected"), lambda: events("n1 deposed"))
    lb = b.elect_leader("n2:6627", lambda: events("n2 elected"), lambda: events("n2 deposed"))
    backend.wait(lambda: la.is_leader, "first contender to lead")
    assert not lb.is_leader
    assert a.leader_address() == b.leader_address() == "n1:6627"
    a.close()
    backend.wait(lambda: lb.is_leader, "second contender to take over")
    assert b.leader_address() == "n2:6627"
    backend.wait(lambda: "n1 deposed" in events.values, "n1's on_deposed")
    # each contender's own callbacks alternate; the two contenders' are not ordered
    assert [e for e in events.values if e.startswith("n1")] == ["n1 elected", "n1 deposed"]
    assert [e for e in events.values if e.startswith("n2")] == ["n2 elected"]


def test_fenced_write_from_a_deposed_leader_raises_fenced_out(backend):
    a, b = backend.make(), backend.make()
    la = a.elect_leader("n1:6627", lambda: None, lambda: None)
    backend.wait(lambda: la.is_leader, "election")
    lb = b.elect_leader("n2:6627", lambda: None, lambda: None)  # leads once n1's node is gone
    a.set_assignment(assignment(), la)

    # The server-side fence: the leader still believes it leads (its watch is held
    # back) but its election node is gone, as after an expired session.
    with la._lock:
        backend.raw.delete(la.node_path)
        assert la._leader
        with pytest.raises(FencedOut):
            a.set_assignment(assignment(port=6701), la)
        with pytest.raises(FencedOut):
            a.delete_assignment("wc-1", la)
    backend.wait(lambda: not la.is_leader and lb.is_leader, "deposition noticed")
    with pytest.raises(FencedOut):
        a.set_assignment(assignment(port=6701), la)
    assert b.assignment("wc-1") == assignment()


def test_leader_stops_trusting_itself_while_suspended_and_reenters_after_loss(backend):
    a, b = backend.make(), backend.make()
    la = a.elect_leader("n1:6627", lambda: None, lambda: None)
    backend.wait(lambda: la.is_leader, "election")
    lb = b.elect_leader("n2:6627", lambda: None, lambda: None)
    trust_when_suspended = Recorder()
    a.add_state_listener(lambda s: trust_when_suspended(la.is_leader) if s == "SUSPENDED" else None)

    node = la.node_path
    a.storage.drop_connection()
    backend.wait(lambda: trust_when_suspended.values, "SUSPENDED")
    assert trust_when_suspended.values == [False]
    backend.wait(lambda: la.is_leader, "leadership back after reconnecting")
    assert la.node_path == node  # same session, same node

    a.storage.expire_session()  # the node is gone: n2 leads, n1 re-enters behind it
    backend.wait(lambda: lb.is_leader, "n2 to lead")
    backend.wait(lambda: la.node_path != node and a.connected, "n1 to re-enter")
    assert not la.is_leader and b.leader_address() == "n2:6627"
    election = f"{backend.root}/election"
    assert len(contenders(backend.raw.children(election))) == 2
    la.cancel()
    backend.wait(lambda: len(contenders(backend.raw.children(election))) == 1, "n1 to leave")


def test_a_deleted_election_node_deposes_its_leader_at_once_and_it_enters_again(backend):
    """Issue 17: deleting the leader's election znode (another client, the session still alive)
    left nimbus leaderless until restarted. Now the leader is deposed at once and re-enters with
    a new node, so a leader exists again, its writes fenced by the new node."""
    a = backend.make()
    events = Recorder()
    la = a.elect_leader("n1:6627", lambda: events("elected"), lambda: events("deposed"))
    backend.wait(lambda: la.is_leader, "election")
    node = la.node_path
    backend.raw.delete(node)
    backend.wait(lambda: la.is_leader and la.node_path not in (None, node), "the only contender to lead again")
    assert events.values == ["elected", "deposed", "elected"]
    assert a.leader_address() == "n1:6627"
    election = f"{backend.root}/election"
    assert contenders(backend.raw.children(election)) == [la.node_path.rsplit("/", 1)[1]]
    a.set_assignment(assignment(), la)  # fenced by the new node


def test_a_deleted_node_hands_leadership_on_and_its_contender_becomes_a_candidate_again(backend):
    a, b = backend.make(), backend.make()
    la = a.elect_leader("n1:6627", lambda: None, lambda: None)
    backend.wait(lambda: la.is_leader, "election")
    lb = b.elect_leader("n2:6627", lambda: None, lambda: None)
    election = f"{backend.root}/election"
    backend.wait(lambda: len(contenders(backend.raw.children(election))) == 2, "two contenders")

    candidate = lb.node_path
    backend.raw.delete(candidate)  # a standby's node: it comes back, behind the leader
    backend.wait(lambda: lb.node_path not in (None, candidate)
                 and len(contenders(backend.raw.children(election))) == 2, "the candidate to re-enter")
    assert la.is_leader and not lb.is_leader

    leader_node = la.node_path
    backend.raw.delete(leader_node)
    backend.wait(lambda: lb.is_leader, "the standby to take over")
    backend.wait(lambda: la.node_path not in (None, leader_node)
                 and len(contenders(backend.raw.children(election))) == 2, "the old leader to re-enter")
    assert not la.is_leader and b.leader_address() == "n2:6627"
    with pytest.raises(FencedOut):
        a.set_assignment(assignment(), la)
    la.cancel()
    lb.cancel()
    backend.wait(lambda: contenders(backend.raw.children(election)) == [], "both to leave")


def test_conditional_assignment_write_with_a_stale_version_raises(backend):
    state = backend.make()
    leadership = state.elect_leader("n1:6627", lambda: None, lambda: None)
    backend.wait(lambda: leadership.is_leader, "election")
    first = state.set_assignment(assignment(), leadership)
    assert first.version == 0 == state.assignment("wc-1").version
    second = state.set_assignment(assignment(port=6701, version=0), leadership)
    assert second.version == 1
    with pytest.raises(StaleAssignment):
        state.set_assignment(assignment(port=6702, version=0), leadership)
    with pytest.raises(StaleAssignment):
        state.set_assignment(assignment("other", version=3), leadership)
    assert state.assignment("wc-1") == assignment(port=6701)
    assert state.assignments() == {"wc-1": assignment(port=6701)}
    state.delete_assignment("wc-1", leadership)
    state.delete_assignment("wc-1", leadership)  # idempotent
    assert state.assignment("wc-1") is None


def test_assignment_watches_see_every_change(backend):
    nimbus, supervisor_side = backend.make(), backend.make()
    leadership = nimbus.elect_leader("n1:6627", lambda: None, lambda: None)
    backend.wait(lambda: leadership.is_leader, "election")
    every, one = Recorder(), Recorder()
    supervisor_side.watch_assignments(every)
    supervisor_side.watch_assignment("wc-1", one)
    assert every.last == {} and one.last is None

    nimbus.set_assignment(assignment(), leadership)
    backend.wait(lambda: every.last == {"wc-1": assignment()} and one.last == assignment(), "creation")
    nimbus.set_assignment(assignment("wc-2"), leadership)
    backend.wait(lambda: set(every.last) == {"wc-1", "wc-2"}, "second topology")
    nimbus.set_assignment(assignment(port=6701, version=0), leadership)
    backend.wait(lambda: every.last["wc-1"] == assignment(port=6701) and every.last["wc-1"].version == 1
                 and one.last == assignment(port=6701), "update")
    nimbus.delete_assignment("wc-1", leadership)
    backend.wait(lambda: set(every.last) == {"wc-2"} and one.values[-1] is None, "deletion")
    nimbus.set_assignment(assignment(), leadership)  # back again: watched again
    backend.wait(lambda: set(every.last) == {"wc-1", "wc-2"} and one.last == assignment(), "re-creation")


# -- errors and malformed data ----------------------------------------------------------------------


def test_errors_are_trimmed_to_the_newest_ten_per_component(backend):
    state = backend.make()
    state.create_topology(topology())
    for i in range(13):
        state.report_error("wc-1", ErrorRecord("split", 1, "h", 6700, float(i), f"ValueError: {i}"))
    state.report_error("wc-1", ErrorRecord("odd/name", 2, "h", 6700, 1.0, "KeyError: k"))
    errors = state.errors("wc-1")
    assert [e.message for e in errors["split"]] == [f"ValueError: {i}" for i in range(3, 13)]
    assert [e.message for e in errors["odd/name"]] == ["KeyError: k"]
    assert state.errors("other") == {}


def test_errors_about_a_deleted_topology_leave_nothing_behind(backend):
    state = backend.make()
    state.create_topology(topology())
    state.delete_topology("wc-1")
    state.report_error("wc-1", ErrorRecord("__worker", -1, "h", 6700, 1.0, "worker died"))
    assert state.errors("wc-1") == {}
    assert backend.raw.children(f"{backend.root}/errors") == []


def test_malformed_znodes_are_skipped_and_never_break_watchers(backend):
    a, b, root = backend.make(), backend.make(), backend.root
    leadership = a.elect_leader("n1:6627", lambda: None, lambda: None)
    backend.wait(lambda: leadership.is_leader, "election")
    backend.raw.create(f"{root}/supervisors/junk", b"\xc1 not msgpack", ephemeral=True)
    backend.raw.create(f"{root}/topologies/junk", b"\x93\x01\x02\x03")
    backend.raw.create(f"{root}/assignments/wc-1", b"junk")
    backend.raw.create(f"{root}/errors/wc-1/split/e_", b"junk", sequence=True, makepath=True)

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
    backend.wait(lambda: sups.last == {"sup-1": supervisor()} and tops.last == {"wc-1": topology()}
                 and asgs.last == {"wc-1": assignment()} and one.last == assignment(),
                 "valid records through every watch")
    backend.raw.set(f"{root}/supervisors/sup-1", b"junk again")
    backend.wait(lambda: sups.last == {}, "corrupted record dropped")
    with pytest.raises(ClusterStateError, match="malformed"):
        b.update_topology("junk", lambda r: r)


def test_an_undecodable_topology_is_listed_as_corrupt_and_deleting_it_frees_its_name(backend, caplog, monkeypatch):
    """Issue 17: garbage under topologies/ kept its name claimed ("already running") while no
    command could find it. It is now reported with its id and name, and delete_topology removes
    it with its name, code and assignment."""
    monkeypatch.setattr(watches, "_malformed_logs", {})  # no path logged yet by an earlier test
    a, b, root = backend.make(), backend.make(), backend.root
    leadership = a.elect_leader("n1:6627", lambda: None, lambda: None)
    backend.wait(lambda: leadership.is_leader, "election")
    a.create_topology(topology())
    a.put_code("wc-1", b"code")
    a.set_assignment(assignment(), leadership)
    a.create_topology(topology("ok-1", "ok"))
    backend.raw.set(f"{root}/topologies/wc-1", b"\xc1 garbage")
    backend.raw.create(f"{root}/topologies/orphan-1", b"\x93\x01\x02\x03")  # in no names' index

    with caplog.at_level("WARNING", logger="streamgale.cluster.watches"):
        for _ in range(3):
            records, corrupt = b.topologies_and_corrupt()
            assert b.topologies() == records == {"ok-1": topology("ok-1", "ok")}
    assert {c.id: c.name for c in corrupt.values()} == {"wc-1": "wc", "orphan-1": None}
    assert "not valid msgpack" in corrupt["wc-1"].error
    logged = [r.getMessage() for r in caplog.records if "malformed znode" in r.getMessage()]
    assert sorted(logged) == sorted(f"ignoring malformed znode {root}/topologies/{tid}: {corrupt[tid].error}"
                                    for tid in ("wc-1", "orphan-1"))  # once each, not once per read
    with pytest.raises(TopologyExists, match="named 'wc'"):
        a.create_topology(topology("wc-2"))

    b.delete_topology("wc-1")
    b.delete_topology("orphan-1")
    assert b.topologies_and_corrupt() == ({"ok-1": topology("ok-1", "ok")}, {})
    assert b.assignment("wc-1") is None and backend.raw.children(f"{root}/topology-names") == ["ok"]
    with pytest.raises(ClusterStateError, match="no code package"):
        b.get_code("wc-1")
    a.create_topology(topology("wc-2"))  # the name is free again


def test_undecodable_assignments_are_named_so_the_leader_can_repair_them(backend):
    a, root = backend.make(), backend.root
    leadership = a.elect_leader("n1:6627", lambda: None, lambda: None)
    backend.wait(lambda: leadership.is_leader, "election")
    a.set_assignment(assignment(), leadership)
    backend.raw.create(f"{root}/assignments/junk-1", b"junk")
    assert a.assignments_and_corrupt() == ({"wc-1": assignment()}, {"junk-1"})
    a.set_assignment(assignment("junk-1"), leadership)  # an unconditional write overwrites it
    assert a.assignments_and_corrupt() == ({"wc-1": assignment(), "junk-1": assignment("junk-1")}, set())


def test_names_that_cannot_be_znodes_are_refused_by_name(backend):
    state = backend.make()
    with pytest.raises(ClusterStateError, match="topology id 'a/b' cannot be a znode name"):
        state.topology("a/b")
    with pytest.raises(ClusterStateError, match="supervisor id '' cannot be a znode name"):
        state.register_supervisor(SupervisorInfo("", "h", (1,)))


def test_storage_failures_reach_callers_as_cluster_state_errors(backend):
    state = backend.make()
    state.storage.close()
    with pytest.raises(ClusterStateError, match="cluster state topologies failed: children of .*/topologies"):
        state.topologies()


# -- ZooKeeper only: the factory, connection and server lifecycle ---------------------------------


def test_open_cluster_state_uses_the_configured_zookeeper_and_root(zookeeper, zk_root, make_cluster_state):
    config = Config({"zookeeper.servers": (zookeeper.address,), "zookeeper.root": zk_root,
                     "zookeeper.session_timeout": 3.0})
    with open_cluster_state(config) as state:
        assert isinstance(state.storage, ZkStorage) and state.storage.session_timeout == 3.0
        state.create_topology(topology())
    assert make_cluster_state().topology("wc-1") == topology()


def test_start_fails_clearly_when_zookeeper_is_unreachable():
    port = free_port()
    state = ClusterState(ZkStorage([f"127.0.0.1:{port}"], session_timeout=2.0), "/x")
    with pytest.raises(ClusterStateError, match=f"cannot reach ZooKeeper at 127.0.0.1:{port} within 0.5 s"):
        state.start(timeout=0.5)
    state.close()


def test_server_restart_keeps_data_on_the_same_port(tmp_path):
    with ZooKeeperServer(data_dir=tmp_path / "zk") as server:
        port = server.port
        with ClusterState(ZkStorage([server.address], session_timeout=5.0), "/r") as state:
            state.create_topology(topology())
        server.stop()
        assert not server.running
        server.start()
        assert server.port == port
        with ClusterState(ZkStorage([server.address], session_timeout=5.0), "/r") as state:
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


# -- losses ---------------------------------------------------------------------------------------


def test_every_loss_grows_the_topology_s_epoch_for_every_watcher_and_goes_with_the_topology(backend):
    a, b = backend.make(), backend.make()
    a.create_topology(topology())
    seen = Recorder()
    b.watch_losses(seen)
    assert seen.last == {}
    a.report_loss("wc-1", "sup-1:6700", "worker died: exited 3.0 s after launch", 10.0)
    backend.wait(lambda: "wc-1" in (seen.last or {}), "the first loss")
    first = seen.last["wc-1"]
    assert (first.slot, first.reason, first.time) == ("sup-1:6700", "worker died: exited 3.0 s after launch", 10.0)
    b.report_loss("wc-1", "sup-2:6701", "stopped heartbeating", 11.0)  # another writer: nimbus
    backend.wait(lambda: seen.last["wc-1"].epoch == first.epoch + 1, "the second loss")
    assert seen.last["wc-1"].slot == "sup-2:6701"

    a.delete_topology("wc-1")
    backend.wait(lambda: seen.last == {}, "the losses to go with the topology")
    a.report_loss("wc-1", "sup-1:6700", "worker died as it was killed", 12.0)
    assert backend.raw.children(f"{backend.root}/losses") == []
