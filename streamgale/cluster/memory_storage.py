"""An in-memory ZooKeeper, for fast in-process tests of nimbus, supervisors and the cluster state.

One :class:`MemoryZooKeeper` plays the server; each :class:`MemoryStorage` is a
client of it with its own session, implementing
:class:`~streamgale.cluster.storage.Storage` as :class:`~.zk_storage.ZkStorage`
does on a real server: versions, sequence numbers (the parent's child
counter), ephemeral owners, all-or-nothing transactions with a result per
operation, and watches that see every change.

Threads are kazoo's: a watch's first call runs in the caller's thread; later
calls and connection-state listeners run on the client's event thread, one
at a time, in the order the changes happened; :meth:`MemoryStorage.spawn`
runs work in order on the client's worker thread. Faults are injected, never
timed: :meth:`MemoryStorage.drop_connection` (SUSPENDED, the session lives),
:meth:`MemoryStorage.expire_session` (LOST: its ephemerals go) and
:meth:`MemoryStorage.reconnect`. Tests wait with :meth:`MemoryZooKeeper.settle`,
which returns once every callback due so far, on every client, has run.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .storage import (
    CONNECTED,
    LOST,
    SUSPENDED,
    BadVersion,
    ChildrenCallback,
    DataCallback,
    NodeExists,
    NoNode,
    NotEmpty,
    RolledBack,
    Stat,
    StateListener,
    StorageError,
    StorageTimeout,
    TxnResult,
    call_quietly,
)

_NEW, _CLOSED = "NEW", "CLOSED"  # client states besides the three listeners see
_Op = tuple[str, Callable[["_Commit"], TxnResult]]  # (what it does, for messages; how)


@dataclass(frozen=True)
class _Znode:
    data: bytes
    version: int = 0
    owner: int = 0  # the session of an ephemeral; 0 if persistent
    mzxid: int = 0  # the change that last wrote it: what data watches compare
    created: int = 0  # children created so far (deletions do not count): the next sequence number
    children: frozenset[str] = frozenset()


def _split(path: str, what: str) -> tuple[str, str]:
    if not path.startswith("/") or "//" in path or (path != "/" and path.endswith("/")):
        raise StorageError(f"{what}: {path!r} is not a znode path (absolute, no empty parts)")
    parent, _, name = path.rpartition("/")
    return parent or "/", name


def _join(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


class _Commit:
    """One atomic change: operations apply to a copy of the tree, which replaces it only if all succeed."""

    def __init__(self, nodes: dict[str, _Znode], zxid: int, session: int):
        self.nodes, self.zxid, self.session = dict(nodes), zxid, session
        self.touched: list[tuple[str, str]] = []  # ("data" | "children", path): what watches must look at

    def _get(self, path: str, what: str) -> _Znode:
        node = self.nodes.get(path)
        if node is None:
            raise NoNode(f"{what}: no znode {path}")
        return node

    def _check_version(self, node: _Znode, version: int, what: str) -> None:
        if version != -1 and version != node.version:
            raise BadVersion(f"{what}: its version is {node.version}, not {version}")

    def create(self, path: str, value: bytes, ephemeral: bool, sequence: bool, makepath: bool = False) -> str:
        what = f"create {path}"
        parent_path, name = _split(path, what)
        if makepath:
            self.ensure(parent_path)
        parent = self._get(parent_path, what)
        if parent.owner:
            raise StorageError(f"{what}: {parent_path} is ephemeral and cannot have children")
        if sequence:
            name += f"{parent.created:010d}"
        path = _join(parent_path, name)
        if path in self.nodes:
            raise NodeExists(f"{what}: {path} exists")
        self.nodes[parent_path] = replace(parent, created=parent.created + 1, children=parent.children | {name})
        self.nodes[path] = _Znode(value, owner=self.session if ephemeral else 0, mzxid=self.zxid)
        self.touched += [("data", path), ("children", parent_path)]
        return path

    def ensure(self, path: str) -> None:
        _split(path, f"ensure_path {path}")
        for i in range(2, len(path) + 1):
            if (i == len(path) or path[i] == "/") and path[:i] not in self.nodes:
                self.create(path[:i], b"", ephemeral=False, sequence=False)

    def set(self, path: str, value: bytes, version: int) -> Stat:
        what = f"set {path}"
        node = self._get(path, what)
        self._check_version(node, version, what)
        node = self.nodes[path] = replace(node, data=value, version=node.version + 1, mzxid=self.zxid)
        self.touched.append(("data", path))
        return Stat(node.version, node.owner)

    def check(self, path: str, version: int) -> bool:
        self._check_version(self._get(path, f"check {path}"), version, f"check {path}")
        return True

    def delete(self, path: str, version: int) -> bool:
        what = f"delete {path}"
        parent_path, name = _split(path, what)
        node = self._get(path, what)
        if path == "/":
            raise StorageError(f"{what}: the root cannot be deleted")
        self._check_version(node, version, what)
        if node.children:
            raise NotEmpty(f"{what}: it has children {sorted(node.children)[:3]}")
        del self.nodes[path]
        parent = self.nodes[parent_path]
        self.nodes[parent_path] = replace(parent, children=parent.children - {name})
        self.touched += [("data", path), ("children", parent_path)]
        return True

    def delete_tree(self, path: str) -> None:
        node = self.nodes.get(path)
        if node is not None:
            for child in sorted(node.children):
                self.delete_tree(_join(path, child))
            self.delete(path, -1)


class MemoryZooKeeper:
    """The server: one tree of znodes and its sessions, shared by :class:`MemoryStorage` clients.

    Thread-safe. Nothing here blocks except :meth:`settle` and :meth:`close`.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # guards the tree, the sessions and every client's state
        self._nodes: dict[str, _Znode] = {"/": _Znode(b"")}
        self._zxid = 0
        self._session_ids = itertools.count(0x5E55_0001)
        self._sessions: dict[int, MemoryStorage] = {}
        self._clients: list[MemoryStorage] = []
        self._idle = threading.Condition()  # guards _pending; never held while taking _lock
        self._pending = 0  # callbacks queued or running on any client's threads

    def client(self) -> MemoryStorage:
        """A new, not yet started client."""
        return MemoryStorage(self)

    def settle(self, timeout: float = 10.0) -> None:
        """Block until every callback due so far (watches, listeners, spawned work, and
        whatever they cause in turn) has run, on every client. Must not be called from a
        callback; raises StorageTimeout if one is stuck."""
        if any(threading.current_thread() in c._threads() for c in list(self._clients)):
            raise StorageError("settle() called from a storage callback thread would wait for itself")
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout):
                raise StorageTimeout(f"{self._pending} storage callbacks still pending after {timeout:g} s "
                                     "(is one blocked?)")

    def close(self, timeout: float = 10.0) -> None:
        """Close every client and wait for their threads to end (test teardown)."""
        for c in list(self._clients):
            c.close()
        for c in list(self._clients):
            for t in c._threads():
                t.join(timeout)
                if t.is_alive():
                    raise StorageTimeout(f"{t.name} still running {timeout:g} s after close (is a callback blocked?)")

    # -- for clients, under _lock --------------------------------------------------------------

    def _open_session(self, client: MemoryStorage) -> int:
        session = next(self._session_ids)
        self._sessions[session] = client
        return session

    def _end_session(self, session: int) -> None:
        """The session is gone: its ephemerals are deleted; its client hears nothing of it."""
        if self._sessions.pop(session, None) is not None:
            doomed = sorted(p for p, n in self._nodes.items() if n.owner == session)

            def delete_ephemerals(change: _Commit) -> bool:
                for path in doomed:  # ephemerals have no children: this cannot fail
                    change.delete(path, -1)
                return True

            self._commit(session, [(f"end session {session:#x}", delete_ephemerals)])

    def _commit(self, session: int, ops: Sequence[_Op]) -> list[TxnResult]:
        change = _Commit(self._nodes, self._zxid + 1, session)
        results = []
        for i, (what, op) in enumerate(ops):
            try:
                results.append(op(change))
            except StorageError as e:
                return [e if j == i else RolledBack(f"{other}: rolled back, as {what} failed")
                        for j, (other, _) in enumerate(ops)]
        self._nodes, self._zxid = change.nodes, change.zxid
        for client in set(self._sessions.values()):
            client._changed(change.touched)
        return results


class _CallbackThread:
    """A thread that runs queued callbacks one at a time, in order; counted by settle()."""

    def __init__(self, server: MemoryZooKeeper, name: str):
        self._server = server
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._open = True
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._server._idle:
            if self._open:  # else the client is closed: nothing more runs
                self._server._pending += 1
                self._queue.put((fn, args))

    def stop(self) -> None:
        """Let the thread end once it has run what is queued now."""
        with self._server._idle:
            if self._open:
                self._open = False
                self._queue.put(None)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            try:
                call_quietly(fn, *args)
            finally:
                with self._server._idle:
                    self._server._pending -= 1
                    self._server._idle.notify_all()


class _Watch:
    """A children or data watch of one client: delivers only what changed since its last call."""

    _UNSEEN = object()

    def __init__(self, client: MemoryStorage, path: str, cb: Callable[..., bool | None], children: bool):
        self.client, self.path, self.cb, self.children = client, path, cb, children
        self.lock = threading.RLock()  # one delivery at a time, as kazoo's watchers have it
        self.seen: object = self._UNSEEN
        self.stopped = False

    def wants(self, kind: str, path: str) -> bool:
        return path == self.path and (kind == "data" or self.children)

    def deliver(self) -> None:
        with self.lock:
            with self.client.server._lock:
                if self.stopped or not self.client.connected:
                    return  # disconnected: reconnect() delivers again
                node = self.client.server._nodes.get(self.path)
                if self.children:
                    if node is None:  # kazoo's ChildrenWatch ends quietly when its node goes
                        self._stop()
                        return
                    names = sorted(node.children)
                    seen: object = names
                    args: tuple[Any, ...] = (list(names),)
                else:
                    seen = None if node is None else node.mzxid
                    args = (None, None) if node is None else (node.data, Stat(node.version, node.owner))
                if seen == self.seen:
                    return
                self.seen = seen
            if call_quietly(self.cb, *args) is False:
                with self.client.server._lock:
                    self._stop()

    def _stop(self) -> None:
        self.stopped = True
        if self in self.client._watches:
            self.client._watches.remove(self)


class MemoryStorage:
    """One client of a :class:`MemoryZooKeeper`, with its own session; see :mod:`.storage` for the contract.

    Operations never block (beyond the server's lock) and raise StorageError while
    not connected. ``timeout`` of :meth:`start` is accepted for the protocol's sake.
    """

    _numbers = itertools.count(1)

    def __init__(self, server: MemoryZooKeeper):
        self.server = server
        self._state = _NEW
        self._session: int | None = None  # server-side; may have expired while SUSPENDED
        self._listeners: list[StateListener] = []
        self._watches: list[_Watch] = []
        number = next(self._numbers)
        self._events = _CallbackThread(server, f"memory-storage-{number}-events")
        self._worker = _CallbackThread(server, f"memory-storage-{number}-worker")
        with server._lock:
            server._clients.append(self)

    def __repr__(self) -> str:
        return f"<MemoryStorage session={self._session} {self._state}>"

    def _threads(self) -> tuple[threading.Thread, ...]:
        return self._events.thread, self._worker.thread

    # -- lifecycle and connection states (all under the server's lock) -------------------------

    def start(self, timeout: float = 10.0) -> None:
        with self.server._lock:
            if self._state == _CLOSED:
                raise StorageError("start: this MemoryStorage is closed")
            if self._state == _NEW:
                self._session = self.server._open_session(self)
                self._set_state(CONNECTED)

    def close(self) -> None:
        """End the session and stop; LOST and everything queued before it is still delivered."""
        with self.server._lock:
            if self._state == _CLOSED:
                return
            started, self._state = self._state != _NEW, _CLOSED
            if self._session is not None:
                self.server._end_session(self._session)
            self._watches.clear()
            if started:
                self._events.submit(self._deliver_state, LOST, list(self._listeners))
            self._events.submit(self._worker.stop)  # after whatever LOST's listeners spawn
            self._events.stop()

    @property
    def session_id(self) -> int | None:
        return self._session if self._state == CONNECTED else None

    @property
    def connected(self) -> bool:
        return self._state == CONNECTED

    def add_listener(self, cb: StateListener) -> None:
        self._listeners.append(cb)

    def remove_listener(self, cb: StateListener) -> None:
        if cb in self._listeners:
            self._listeners.remove(cb)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on this client's worker thread, after the work spawned before it."""
        self._worker.submit(fn, *args)

    def settle(self, timeout: float = 10.0) -> None:
        """:meth:`MemoryZooKeeper.settle` (every client's callbacks, not only this one's)."""
        self.server.settle(timeout)

    def _set_state(self, state: str) -> None:
        # The listeners of the moment hear it, as kazoo calls them at the change itself.
        self._state = state
        self._events.submit(self._deliver_state, state, list(self._listeners))

    @staticmethod
    def _deliver_state(state: str, listeners: list[StateListener]) -> None:
        for cb in listeners:
            call_quietly(cb, state)

    def _live(self, what: str) -> int:
        if self._state != CONNECTED or self._session is None:
            raise StorageError(f"{what}: not connected ({self._state.lower()})")
        return self._session

    # -- fault injection -----------------------------------------------------------------------

    def drop_connection(self, reconnect: bool = True) -> None:
        """Drop the connection: listeners get SUSPENDED, the session lives on the server.
        Then reconnect at once (CONNECTED), unless ``reconnect`` is False: see :meth:`reconnect`."""
        with self.server._lock:
            self._live("drop_connection")
            self._set_state(SUSPENDED)
            if reconnect:
                self.reconnect()

    def expire_session(self, reconnect: bool = True) -> None:
        """End the session on the server, as a long partition would: its ephemerals go at once
        and other clients' watches see it. A connected client then hears LOST, opens a new
        session and hears CONNECTED; with ``reconnect=False`` it stays LOST until
        :meth:`reconnect`. A SUSPENDED client learns of it only when it reconnects."""
        with self.server._lock:
            if self._state in (_NEW, _CLOSED) or self._session is None:
                raise StorageError(f"expire_session: no session to expire ({self._state.lower()})")
            self.server._end_session(self._session)
            if self._state == CONNECTED:
                self._set_state(LOST)
            if reconnect:
                self.reconnect()

    def reconnect(self) -> None:
        """Connect again after a drop or expiry: the same session if it lives, else LOST and a
        new one; then CONNECTED, and every watch delivers what changed meanwhile."""
        with self.server._lock:
            if self._state in (_NEW, _CLOSED):
                raise StorageError(f"reconnect: this MemoryStorage is {self._state.lower()}")
            if self._state == CONNECTED:
                return
            if self._session not in self.server._sessions:
                if self._state != LOST:
                    self._set_state(LOST)
                self._session = self.server._open_session(self)
            self._set_state(CONNECTED)
            for w in self._watches:
                self._events.submit(w.deliver)

    # -- operations ----------------------------------------------------------------------------

    def _commit(self, what: str, ops: Sequence[_Op]) -> list[TxnResult]:
        with self.server._lock:
            return self.server._commit(self._live(what), ops)

    def _one(self, what: str, op: Callable[[_Commit], TxnResult]) -> Any:
        [result] = self._commit(what, [(what, op)])
        if isinstance(result, StorageError):
            raise result
        return result

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False, sequence: bool = False,
               makepath: bool = False) -> str:
        return self._one(f"create {path}", lambda c: c.create(path, value, ephemeral, sequence, makepath))

    def get(self, path: str) -> tuple[bytes, Stat]:
        with self.server._lock:
            self._live(f"get {path}")
            node = self.server._nodes.get(path)
            if node is None:
                raise NoNode(f"get {path}: no znode {path}")
            return node.data, Stat(node.version, node.owner)

    def set(self, path: str, value: bytes, version: int = -1) -> Stat:
        return self._one(f"set {path}", lambda c: c.set(path, value, version))

    def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        if recursive:
            self._one(f"delete {path}", lambda c: c.delete_tree(path))
        else:
            self._one(f"delete {path}", lambda c: c.delete(path, version))

    def exists(self, path: str) -> Stat | None:
        with self.server._lock:
            self._live(f"exists {path}")
            node = self.server._nodes.get(path)
            return None if node is None else Stat(node.version, node.owner)

    def children(self, path: str) -> list[str]:
        with self.server._lock:
            self._live(f"children of {path}")
            node = self.server._nodes.get(path)
            if node is None:
                raise NoNode(f"children of {path}: no znode {path}")
            return sorted(node.children)

    def ensure_path(self, path: str) -> None:
        self._one(f"ensure_path {path}", lambda c: c.ensure(path))

    def transaction(self) -> _MemoryTransaction:
        return _MemoryTransaction(self)

    def secure_tree(self, root: str) -> int:
        return 0  # no ACLs in memory: the in-process cluster has no other clients

    def watch_children(self, path: str, cb: ChildrenCallback) -> None:
        self._watch(_Watch(self, path, cb, children=True), f"watch children of {path}")

    def watch_data(self, path: str, cb: DataCallback) -> None:
        self._watch(_Watch(self, path, cb, children=False), f"watch data of {path}")

    def _watch(self, w: _Watch, what: str) -> None:
        with w.lock:  # before it is seen by _changed: the first call comes first
            with self.server._lock:
                self._live(what)
                self._watches.append(w)
            w.deliver()

    def _changed(self, touched: list[tuple[str, str]]) -> None:
        # Under the server's lock, from a commit: queue the deliveries, call nothing here.
        if self._state == CONNECTED:
            for w in list(self._watches):
                if any(w.wants(kind, path) for kind, path in touched):
                    self._events.submit(w.deliver)


class _MemoryTransaction:
    def __init__(self, storage: MemoryStorage):
        self._storage = storage
        self._ops: list[_Op] = []

    def check(self, path: str, version: int) -> None:
        self._ops.append((f"check {path}", lambda c: c.check(path, version)))

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False, sequence: bool = False) -> None:
        self._ops.append((f"create {path}", lambda c: c.create(path, value, ephemeral, sequence)))

    def set_data(self, path: str, value: bytes, version: int = -1) -> None:
        self._ops.append((f"set {path}", lambda c: c.set(path, value, version)))

    def delete(self, path: str, version: int = -1) -> None:
        self._ops.append((f"delete {path}", lambda c: c.delete(path, version)))

    def commit(self) -> list[TxnResult]:
        return self._storage._commit(f"transaction of {len(self._ops)} ops", self._ops)
