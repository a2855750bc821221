"""The Storage contract, on a real ZooKeeper (ZkStorage) and on MemoryStorage, by the same assertions.

Where the two must agree (versions, sequence numbers, ephemeral owners,
transactions, watches, connection states) a test runs on both, which is what
makes the memory store a faithful stand-in. The memory store's own controls
(settle, staying disconnected, expiry while suspended) are tested on it alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from conftest import wait_for
from memory_fixtures import memory_zookeeper  # noqa: F401 - a fixture
from zk_fixtures import TEST_SESSION_TIMEOUT

from streamgale.cluster.memory_storage import MemoryStorage
from streamgale.cluster.storage import (
    BadVersion,
    NodeExists,
    NoNode,
    NotEmpty,
    RolledBack,
    Stat,
    Storage,
    StorageError,
    StorageTimeout,
)
from streamgale.cluster.zk_storage import ZkStorage


class Recorder:
    """Collects callback values, and the thread each came on."""

    def __init__(self, stop_after: int | None = None):
        self.values: list[object] = []
        self.threads: list[threading.Thread] = []
        self.stop_after = stop_after  # return False (end the watch) from this call on
        self.lock = threading.Lock()

    def __call__(self, *args):
        with self.lock:
            self.values.append(args[0] if len(args) == 1 else args)
            self.threads.append(threading.current_thread())
            return False if self.stop_after is not None and len(self.values) >= self.stop_after else None

    @property
    def last(self):
        with self.lock:
            return self.values[-1] if self.values else None


class Stores:
    """Started clients of one store (``new()``), a root for this test, and ``wait``."""

    def __init__(self, new: Callable[[], Storage], root: str, wait: Callable[[Callable[[], object], str], None]):
        self.new, self.root, self.wait = new, root, wait


@pytest.fixture(params=["zookeeper", "memory"])
def stores(request) -> Stores:
    if request.param == "zookeeper":
        address, root = request.getfixturevalue("zookeeper").address, request.getfixturevalue("zk_root")
        made: list[ZkStorage] = []

        def new_zk() -> Storage:
            storage = ZkStorage([address], TEST_SESSION_TIMEOUT)
            made.append(storage)
            storage.start(timeout=10)
            storage.ensure_path(root)
            return storage

        request.addfinalizer(lambda: [s.close() for s in made])
        return Stores(new_zk, root, lambda predicate, message: wait_for(predicate, timeout=10, message=message))
    server = request.getfixturevalue("memory_zookeeper")

    def new_memory() -> Storage:
        storage = server.client()
        storage.start()
        storage.ensure_path("/t")
        return storage

    def settled(predicate: Callable[[], object], message: str) -> None:
        server.settle()
        assert predicate(), f"{message}: not so once every callback had run"

    return Stores(new_memory, "/t", settled)


# -- operations, on both --------------------------------------------------------------------------


def test_versions_count_writes_and_conditional_operations_check_them(stores):
    s, p = stores.new(), f"{stores.root}/node"
    assert s.create(p, b"a") == p
    assert s.get(p) == (b"a", Stat(0, 0))
    assert s.set(p, b"b", version=0) == Stat(1, 0)
    assert s.set(p, b"c") == Stat(2, 0)
    with pytest.raises(BadVersion):
        s.set(p, b"d", version=1)
    with pytest.raises(NodeExists):
        s.create(p)
    with pytest.raises(NoNode):
        s.create(f"{stores.root}/missing/child")
    s.create(f"{stores.root}/missing/child", makepath=True)
    s.create(f"{p}/child")
    with pytest.raises(NotEmpty):
        s.delete(p)
    with pytest.raises(BadVersion):
        s.delete(f"{p}/child", version=3)
    s.delete(p, recursive=True)
    s.delete(p, recursive=True)  # absent: no error
    with pytest.raises(NoNode):
        s.delete(p)
    with pytest.raises(NoNode):
        s.get(p)
    assert s.exists(p) is None and s.exists(stores.root) is not None
    s.ensure_path(f"{p}/a/b")
    s.ensure_path(f"{p}/a/b")
    assert s.children(p) == ["a"]


def test_sequence_numbers_count_the_children_ever_created(stores):
    s, d = stores.new(), f"{stores.root}/election"
    s.create(d)
    first = s.create(f"{d}/n_", sequence=True)
    s.create(f"{d}/plain")
    second = s.create(f"{d}/n_", sequence=True)
    s.delete(first)
    third = s.create(f"{d}/n_", sequence=True)
    assert [first, second, third] == [f"{d}/n_0000000000", f"{d}/n_0000000002", f"{d}/n_0000000003"]
    assert sorted(s.children(d)) == ["n_0000000002", "n_0000000003", "plain"]


def test_ephemerals_belong_to_their_session_and_vanish_with_it(stores):
    owner, other = stores.new(), stores.new()
    path = f"{stores.root}/eph"
    owner.create(path, b"x", ephemeral=True)
    assert other.get(path)[1].ephemeral_owner == owner.session_id != other.session_id
    assert other.exists(stores.root).ephemeral_owner == 0
    with pytest.raises(StorageError):
        owner.create(f"{path}/child")  # ephemerals cannot have children
    seen = Recorder()
    other.watch_data(path, seen)
    owner.close()
    stores.wait(lambda: seen.last == (None, None), "the ephemeral to vanish")
    assert other.exists(path) is None
    with pytest.raises(StorageError):
        owner.get(path)  # closed


def test_a_transaction_applies_all_or_nothing_with_a_result_per_operation(stores):
    s, r = stores.new(), stores.root
    s.create(f"{r}/a", b"a")
    txn = s.transaction()
    txn.create(f"{r}/b", b"b")
    txn.set_data(f"{r}/missing", b"x")
    txn.create(f"{r}/c", b"c")
    made, failed, after = txn.commit()
    assert isinstance(made, RolledBack) and isinstance(failed, NoNode) and isinstance(after, RolledBack)
    assert s.exists(f"{r}/b") is None and s.exists(f"{r}/c") is None

    txn = s.transaction()
    txn.check(f"{r}/a", 0)
    txn.check(f"{r}/a", -1)
    txn.create(f"{r}/seq-", b"", sequence=True)
    txn.set_data(f"{r}/a", b"a2", version=0)
    txn.delete(f"{r}/a", version=1)
    txn.create(f"{r}/a", b"again", ephemeral=True)
    assert txn.commit() == [True, True, f"{r}/seq-0000000001", Stat(1, 0), True, f"{r}/a"]
    assert s.get(f"{r}/a") == (b"again", Stat(0, s.session_id))

    txn = s.transaction()
    txn.check(f"{r}/a", 5)
    txn.delete(f"{r}/a")
    fence, delete = txn.commit()
    assert isinstance(fence, BadVersion) and isinstance(delete, RolledBack)
    assert s.exists(f"{r}/a") is not None


# -- watches and connection states, on both -------------------------------------------------------


def test_data_watch_calls_first_in_the_caller_then_on_an_event_thread_until_it_returns_false(stores):
    writer, watcher, path = stores.new(), stores.new(), f"{stores.root}/w"
    seen, stopping = Recorder(), Recorder(stop_after=2)
    watcher.watch_data(path, seen)
    watcher.watch_data(path, stopping)
    assert seen.values == stopping.values == [(None, None)]
    assert seen.threads == [threading.current_thread()]
    writer.create(path, b"1")
    stores.wait(lambda: seen.last == (b"1", Stat(0, 0)), "creation")
    writer.set(path, b"2")
    stores.wait(lambda: seen.last == (b"2", Stat(1, 0)), "update")
    writer.delete(path)
    stores.wait(lambda: seen.last == (None, None), "deletion")
    assert threading.current_thread() not in seen.threads[1:]
    # it returned False on its second call (the creation, or the update if that came first)
    assert stopping.values[1:] in ([(b"1", Stat(0, 0))], [(b"2", Stat(1, 0))])


def test_children_watch_sees_every_change_until_it_returns_false(stores):
    writer, watcher, d = stores.new(), stores.new(), f"{stores.root}/dir"
    writer.create(d)
    seen, stopping = Recorder(), Recorder(stop_after=2)
    watcher.watch_children(d, seen)
    watcher.watch_children(d, stopping)
    assert seen.values == stopping.values == [[]] and seen.threads == [threading.current_thread()]
    writer.create(f"{d}/a")
    writer.create(f"{d}/b", ephemeral=True)
    stores.wait(lambda: sorted(seen.last) == ["a", "b"], "two children")
    writer.delete(f"{d}/a")
    stores.wait(lambda: seen.last == ["b"], "one child")
    assert len(stopping.values) == 2  # returned False on its second call


def test_a_dropped_connection_suspends_and_reconnects_to_the_same_session(stores):
    s = stores.new()
    states, spawned = Recorder(), Recorder()
    s.add_listener(states)
    s.create(f"{stores.root}/mine", ephemeral=True)
    session = s.session_id
    s.drop_connection()
    stores.wait(lambda: states.values[-1:] == ["CONNECTED"] and s.connected, "reconnection")
    assert states.values == ["SUSPENDED", "CONNECTED"] and threading.current_thread() not in states.threads
    assert s.session_id == session and s.exists(f"{stores.root}/mine").ephemeral_owner == session
    s.spawn(spawned, "work")
    stores.wait(lambda: spawned.values == ["work"], "spawned work")
    assert spawned.threads[0] is not threading.current_thread()


def test_an_expired_session_loses_its_ephemerals_and_a_new_one_follows(stores):
    s, other = stores.new(), stores.new()
    states, seen = Recorder(), Recorder()
    s.add_listener(states)
    s.create(f"{stores.root}/mine", ephemeral=True)
    s.watch_data(f"{stores.root}/mine", seen)
    session = s.session_id
    s.expire_session()
    stores.wait(lambda: states.values[-1:] == ["CONNECTED"] and s.connected, "a new session")
    assert "LOST" in states.values and s.session_id != session
    assert other.exists(f"{stores.root}/mine") is None
    stores.wait(lambda: seen.last == (None, None), "the watch to see its ephemeral gone")


# -- the memory store's own controls --------------------------------------------------------------


@pytest.fixture
def clients(memory_zookeeper) -> Callable[[], MemoryStorage]:
    def new() -> MemoryStorage:
        storage = memory_zookeeper.client()
        storage.start()
        return storage

    return new


def test_settle_returns_once_every_callback_of_every_client_has_run(memory_zookeeper, clients):
    writer, watcher = clients(), clients()
    seen, chained = Recorder(), Recorder()
    watcher.ensure_path("/d")
    watcher.watch_children("/d", lambda children: [seen(children), watcher.spawn(chained, len(children))])
    for i in range(20):
        writer.create(f"/d/n{i}")
    memory_zookeeper.settle()
    assert seen.last == sorted(f"n{i}" for i in range(20))
    assert chained.last == 20  # work spawned by a callback is waited for too


def test_settle_refuses_to_run_in_a_callback_and_times_out_on_a_blocked_one(memory_zookeeper, clients):
    s = clients()
    refused, release = Recorder(), threading.Event()

    def settle_inside(state: str) -> None:
        try:
            memory_zookeeper.settle()
        except StorageError as e:
            refused(str(e))

    s.add_listener(settle_inside)
    s.drop_connection()
    memory_zookeeper.settle()
    s.remove_listener(settle_inside)
    assert refused.values and "would wait for itself" in refused.values[0]
    s.spawn(release.wait)
    with pytest.raises(StorageTimeout, match="1 storage callbacks still pending"):
        memory_zookeeper.settle(timeout=0.2)
    release.set()
    memory_zookeeper.settle()


def test_a_client_stays_suspended_until_reconnected_and_then_sees_what_changed(memory_zookeeper, clients):
    s, writer = clients(), clients()
    states, seen = Recorder(), Recorder()
    s.add_listener(states)
    s.watch_data("/x", seen)
    s.drop_connection(reconnect=False)
    writer.create("/x", b"meanwhile")
    memory_zookeeper.settle()
    assert states.values == ["SUSPENDED"] and seen.values == [(None, None)]
    assert s.session_id is None and not s.connected
    with pytest.raises(StorageError, match=r"get /x: not connected \(suspended\)"):
        s.get("/x")
    s.reconnect()
    memory_zookeeper.settle()
    assert states.values == ["SUSPENDED", "CONNECTED"] and seen.last == (b"meanwhile", Stat(0, 0))


def test_expiry_while_suspended_is_heard_on_reconnection(memory_zookeeper, clients):
    s, other = clients(), clients()
    states = Recorder()
    s.add_listener(states)
    s.create("/mine", ephemeral=True)
    session = s.session_id
    s.drop_connection(reconnect=False)
    s.expire_session(reconnect=False)
    assert other.exists("/mine") is None  # the server forgets at once
    memory_zookeeper.settle()
    assert states.values == ["SUSPENDED"]  # the client hears nothing yet
    s.reconnect()
    memory_zookeeper.settle()
    assert states.values == ["SUSPENDED", "LOST", "CONNECTED"] and s.session_id != session


def test_an_expired_client_can_stay_lost_until_reconnected(memory_zookeeper, clients):
    s = clients()
    states = Recorder()
    s.add_listener(states)
    s.expire_session(reconnect=False)
    memory_zookeeper.settle()
    assert states.values == ["LOST"] and not s.connected
    with pytest.raises(StorageError, match="not connected"):
        s.create("/y")
    s.reconnect()
    memory_zookeeper.settle()
    assert states.values == ["LOST", "CONNECTED"] and s.create("/y") == "/y"


def test_close_delivers_lost_and_runs_what_its_listeners_spawn(memory_zookeeper, clients):
    s = clients()
    spawned = Recorder()
    s.add_listener(lambda state: s.spawn(spawned, state))
    s.close()
    memory_zookeeper.settle()
    assert spawned.values == ["LOST"]
    s.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        s.start()
    with pytest.raises(StorageError, match=r"not connected \(closed\)"):
        s.children("/")


def test_callbacks_after_the_first_run_on_the_clients_event_thread(memory_zookeeper, clients):
    s, writer = clients(), clients()
    states, seen = Recorder(), Recorder()
    s.add_listener(states)
    s.watch_data("/z", seen)
    writer.create("/z")
    s.drop_connection()
    memory_zookeeper.settle()
    assert {t.name for t in states.threads} == {t.name for t in seen.threads[1:]} == {s._events.thread.name}
