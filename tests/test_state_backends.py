"""Every state backend keeps the StateStore contract: memory, sqlite on a real file, redis on a
real redis-server. Then each durable backend's errors: the message names the setting and the fix."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from streamgale.config import Config
from streamgale.state.redis_store import RedisStore, shown_url
from streamgale.state.sqlite_store import SqliteStore
from streamgale.state.store import BACKENDS, MemorySpace, MemoryStore, StateError, open_store

ODD_BYTES = [b"", b"\x00", b"\xff\xfe\x80", b"caf\xc3\xa9", bytes(range(256))]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def open_ns(request, tmp_path):
    """``open_ns(namespace)``: a new store object (as a restarted task would make) of one backend,
    all over the same underlying state for this test; every store is closed at teardown."""
    made = []
    if request.param == "memory":
        space = MemorySpace()

        def make(ns):
            return MemoryStore(space, ns)
    elif request.param == "sqlite":
        path = str(tmp_path / "state" / "state.sqlite")

        def make(ns):
            return SqliteStore.open(path, ns)
    else:
        url = request.getfixturevalue("redis_url")

        def make(ns):
            return RedisStore.open(url, ns)

    def open_ns(ns="task-1"):
        store = make(ns)
        made.append(store)
        return store

    yield open_ns
    for store in made:
        store.close()


def test_empty_namespace_loads_txid_0_and_no_data(open_ns):
    store = open_ns()
    assert store.load() == (0, {})
    assert store.prepared() is None
    assert store.commit(1) is None
    assert store.rollback() is None


def test_commit_applies_puts_and_deletes_and_returns_held(open_ns):
    store = open_ns()
    store.prepare(1, {b"a": b"1", b"b": b"2"}, b"held-1")
    assert store.prepared() == (1, b"held-1")
    assert store.load() == (0, {})  # prepared is not committed
    assert store.commit(1) == b"held-1"
    assert store.load() == (1, {b"a": b"1", b"b": b"2"})
    assert store.prepared() is None

    store.prepare(2, {b"a": None, b"b": b"22", b"c": b"3", b"never-there": None}, b"held-2")
    assert store.commit(2) == b"held-2"
    assert store.load() == (2, {b"b": b"22", b"c": b"3"})


def test_commit_of_another_or_committed_txid_changes_nothing(open_ns):
    store = open_ns()
    store.prepare(1, {b"k": b"v1"}, b"h1")
    assert store.commit(1) == b"h1"
    store.prepare(2, {b"k": b"v2"}, b"h2")
    assert store.commit(1) is None  # already committed: a retried COMMIT
    assert store.commit(3) is None  # not prepared
    assert store.load() == (1, {b"k": b"v1"})
    assert store.prepared() == (2, b"h2")
    assert store.commit(2) == b"h2"
    assert store.commit(2) is None  # a COMMIT delivered twice
    assert store.load() == (2, {b"k": b"v2"})


def test_rollback_drops_prepared_changes_and_returns_held(open_ns):
    store = open_ns()
    store.prepare(1, {b"k": b"v1"}, b"h1")
    store.commit(1)
    store.prepare(2, {b"k": None, b"x": b"y"}, b"h2")
    assert store.rollback() == b"h2"
    assert store.prepared() is None
    assert store.commit(2) is None
    assert store.rollback() is None
    assert store.load() == (1, {b"k": b"v1"})


def test_prepare_replaces_an_earlier_prepared_transaction(open_ns):
    store = open_ns()
    store.prepare(1, {b"a": b"1", b"b": b"1"}, b"h1")
    store.prepare(2, {b"a": b"2"}, b"h2")
    assert store.prepared() == (2, b"h2")
    assert store.commit(1) is None
    assert store.commit(2) == b"h2"
    assert store.load() == (2, {b"a": b"2"})  # nothing of transaction 1 leaked in


def test_restarted_task_finds_and_commits_the_prepared_transaction(open_ns):
    before = open_ns()
    before.prepare(1, {b"k": b"v"}, b"h1")
    before.commit(1)
    before.prepare(2, {b"k": None, b"n": b"new"}, b"h2")
    before.close()

    after = open_ns()
    assert after.load() == (1, {b"k": b"v"})
    assert after.prepared() == (2, b"h2")
    assert after.commit(2) == b"h2"
    assert open_ns().load() == (2, {b"n": b"new"})


def test_namespaces_are_isolated(open_ns):
    a, b = open_ns("bolt-a:0"), open_ns("bolt-a:1")
    a.prepare(1, {b"k": b"a"}, b"ha")
    assert b.prepared() is None
    assert b.commit(1) is None
    b.prepare(5, {b"k": b"b"}, b"hb")
    assert a.commit(1) == b"ha"
    assert b.load() == (0, {})
    assert b.rollback() == b"hb"
    assert a.load() == (1, {b"k": b"a"})


def test_keys_values_and_held_are_arbitrary_bytes(open_ns):
    store = open_ns("ns with spaces, {braces} and \u00e9")
    changes = {k: v for k, v in zip(ODD_BYTES, reversed(ODD_BYTES))}
    store.prepare(7, changes, b"\xff\x00")
    assert store.prepared() == (7, b"\xff\x00")
    assert store.commit(7) == b"\xff\x00"
    assert open_ns("ns with spaces, {braces} and \u00e9").load() == (7, changes)
    store.prepare(8, {b"": None}, b"")
    assert store.commit(8) == b""
    assert b"" not in store.load()[1]


def test_many_keys_commit_in_one_transaction(open_ns):
    store = open_ns()
    changes = {i.to_bytes(4, "big"): b"v" * (i % 7) for i in range(2000)}
    store.prepare(1, changes, b"h")
    assert store.commit(1) == b"h"
    assert store.load() == (1, changes)


# --- sqlite ---------------------------------------------------------------------------------


def test_sqlite_creates_parent_folders_and_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    store = BACKENDS["sqlite"](Config({"topology.state.sqlite.path": "~/deep/er/state.sqlite"}), "ns")
    try:
        store.prepare(1, {b"k": b"v"}, b"h")
        store.commit(1)
    finally:
        store.close()
    assert (tmp_path / "deep" / "er" / "state.sqlite").is_file()


def test_sqlite_file_is_in_wal_mode(tmp_path):
    import sqlite3

    path = tmp_path / "state.sqlite"
    SqliteStore.open(str(path), "ns").close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_file_that_is_not_a_database_names_setting_path_and_fix(tmp_path):
    path = tmp_path / "state.sqlite"
    path.write_bytes(b"this is not sqlite at all\x00\xff" * 100)
    with pytest.raises(StateError) as e:
        SqliteStore.open(str(path), "ns")
    text = str(e.value)
    assert "topology.state.sqlite.path" in text and str(path) in text
    assert "not a database" in text and "move away" in text


def test_sqlite_path_under_a_file_names_setting_path_and_fix(tmp_path):
    (tmp_path / "a-file").write_text("x")
    path = tmp_path / "a-file" / "state.sqlite"
    with pytest.raises(StateError) as e:
        SqliteStore.open(str(path), "ns")
    text = str(e.value)
    assert "topology.state.sqlite.path" in text and str(path) in text and "writ" in text


def test_sqlite_stores_of_two_threads_share_the_file(tmp_path):
    """Stores of several tasks (threads here, worker processes on a node) write one file at once."""
    path = str(tmp_path / "state.sqlite")
    errors = []

    def task(n):
        try:
            store = SqliteStore.open(path, f"task-{n}")  # all four open the new file at once
            try:
                for txid in range(1, 21):
                    store.prepare(txid, {b"n": str(txid).encode()}, b"h")
                    assert store.commit(txid) == b"h"
            finally:
                store.close()
        except Exception as exc:  # reported below: an exception in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=task, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    for n in range(4):
        store = SqliteStore.open(path, f"task-{n}")
        assert store.load() == (20, {b"n": b"20"})
        store.close()


# --- redis ----------------------------------------------------------------------------------


def test_redis_key_layout_is_the_documented_one(redis_server, redis_url):
    store = RedisStore.open(redis_url, "count:3")
    store.prepare(4, {b"k": b"v"}, b"h")
    with redis_server.client() as c:
        assert c.hgetall("streamgale:state:{count:3}:prepared").keys() == {b"txid", b"changes", b"held"}
        store.commit(4)
        assert c.hgetall("streamgale:state:{count:3}:data") == {b"k": b"v"}
        assert c.get("streamgale:state:{count:3}:txid") == b"4"
        assert not c.exists("streamgale:state:{count:3}:prepared")
    store.close()


def test_redis_unreachable_url_fails_fast_naming_setting_and_url():
    from streamgale.dev.ports import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(StateError) as e:
        BACKENDS["redis"](Config({"topology.state.redis.url": url}), "ns")
    assert time.monotonic() - started < 5
    text = str(e.value)
    assert "topology.state.redis.url" in text and url in text and "is redis-server running there?" in text


def test_redis_server_that_never_answers_fails_open_within_the_timeout():
    """A listener that accepts and stays silent (a hung server) must not hang the task."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        started = time.monotonic()
        with pytest.raises(StateError, match="topology.state.redis.url"):
            RedisStore.open(url, "ns", connect_timeout=0.5, timeout=0.5)
        assert time.monotonic() - started < 4


def test_redis_url_that_is_not_a_redis_url_names_setting():
    with pytest.raises(StateError, match=r"topology.state.redis.url is 'http://x:1/'.*redis://HOST:PORT/DB"):
        RedisStore.open("http://x:1/", "ns")


def test_redis_password_is_not_shown_in_errors():
    assert shown_url("redis://user:s3cret@h:1/0") == "redis://user:***@h:1/0"
    assert shown_url("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert shown_url("redis://h:1/0") == "redis://h:1/0"


def test_redis_killed_between_prepare_and_commit_raises_then_reconnects(redis_server, redis_url):
    store = RedisStore.open(redis_url, "ns")
    try:
        store.prepare(1, {b"k": b"v"}, b"h")
        redis_server.kill()
        started = time.monotonic()
        with pytest.raises(StateError) as e:
            store.commit(1)
        assert time.monotonic() - started < 5
        assert "commit" in str(e.value) and redis_url in str(e.value) and "topology.state.redis.url" in str(e.value)
        with pytest.raises(StateError, match="prepare"):
            store.prepare(2, {}, b"")

        redis_server.start()  # the same port; without persistence the state is gone
        assert store.load() == (0, {})  # the same store reconnects by itself
        store.prepare(1, {b"k": b"v"}, b"h")
        assert store.commit(1) == b"h"
    finally:
        store.close()


def test_open_store_picks_the_configured_backend(tmp_path):
    config = Config({"topology.state.backend": "sqlite", "topology.state.sqlite.path": str(tmp_path / "s.db")})
    store = open_store(config, "ns")
    try:
        assert isinstance(store, SqliteStore)
    finally:
        store.close()
