"""The :class:`~streamgale.cluster.storage.Storage` on a real ZooKeeper: the one module that imports kazoo.

Kazoo's rules hold (see :mod:`.storage`): it calls state listeners on its
connection thread and watch callbacks on its event thread; the client
reconnects forever and a lost session is followed by a new one. Reads
(get, exists, children, ensure_path) are retried up to 3 times while the
connection drops; writes are not, since a write repeated after a lost reply
may fail for having succeeded. Every kazoo exception is turned into the
storage's own, naming the operation and the path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from stat import S_IRWXG, S_IRWXO
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.protocol.connection import _CONNECTION_DROP
from kazoo.protocol.states import ZnodeStat
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.security import make_digest_acl

from .storage import (
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

_ERRORS: tuple[tuple[type[Exception], type[StorageError]], ...] = (
    (NoNodeError, NoNode), (NodeExistsError, NodeExists), (BadVersionError, BadVersion),
    (NotEmptyError, NotEmpty), (RolledBackError, RolledBack), (RuntimeInconsistency, RolledBack))


def _storage_error(e: Exception, what: str) -> StorageError:
    if isinstance(e, NoAuthError):
        return StorageError(f"{what}: NoAuth (ZooKeeper refused access: the znode is locked with the cluster's "
                            f"digest ACL; security.zookeeper_credentials must name the cluster's credentials file)")
    for kazoo_type, ours in _ERRORS:
        if isinstance(e, kazoo_type):
            return ours(f"{what}: {type(e).__name__}")
    return StorageError(f"{what}: {type(e).__name__} {e}".rstrip())


def _stat(stat: ZnodeStat) -> Stat:
    return Stat(stat.version, stat.ephemeralOwner)


def read_credentials(path: str) -> tuple[str, str]:
    """``(user, password)`` from a ``user:password`` file (the first line; refused if others may read it)."""
    file = os.path.expanduser(path)
    try:
        mode = os.stat(file).st_mode
        with open(file, encoding="utf-8") as f:
            line = f.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise StorageError(f"cannot read the ZooKeeper credentials file {file}: {e}") from None
    if mode & (S_IRWXG | S_IRWXO):
        raise StorageError(f"the ZooKeeper credentials file {file} is readable by others; run `chmod 600 {file}`")
    user, sep, password = line.partition(":")
    if not sep or not user or not password:
        raise StorageError(f"the ZooKeeper credentials file {file} must hold one line user:password")
    return user, password


class ZkStorage:
    """One kazoo client, one ZooKeeper session at a time. Thread-safe, as kazoo is.

    With ``credentials`` (user, password) the session authenticates with ZooKeeper's
    digest scheme and every znode it creates is readable and writable by those
    credentials only; :meth:`secure_tree` locks the ones created before.
    """

    def __init__(self, servers: Sequence[str] | str, session_timeout: float = 10.0,
                 credentials: tuple[str, str] | None = None):
        self.servers = tuple(servers.split(",") if isinstance(servers, str) else servers)
        self.session_timeout = session_timeout
        self._acl = [make_digest_acl(*credentials, all=True)] if credentials else None
        self._zk = KazooClient(
            hosts=",".join(self.servers), timeout=session_timeout,
            auth_data=[("digest", ":".join(credentials))] if credentials else None, default_acl=self._acl,
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0},
            command_retry={"max_tries": 3, "delay": 0.1, "backoff": 2, "max_delay": 1.0})
        self._listeners: list[StateListener] = []
        self._losses = 0  # LOST states seen, for expire_session to wait on
        self._lost = threading.Condition()
        self._zk.add_listener(self._on_state)

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._zk.handler.timeout_exception as e:
            raise StorageTimeout(f"{what}: no answer from ZooKeeper at {','.join(self.servers)}") from e
        except KazooException as e:
            raise _storage_error(e, what) from e

    # -- lifecycle and connection states ------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        try:
            self._zk.start(timeout=timeout)
        except self._zk.handler.timeout_exception:
            self._zk.stop()
            raise StorageTimeout(
                f"cannot reach ZooKeeper at {','.join(self.servers)} within {timeout:g} s") from None

    def close(self) -> None:
        try:
            self._zk.stop()
        finally:
            self._zk.close()

    @property
    def session_id(self) -> int | None:
        client_id = self._zk.client_id
        return client_id[0] if client_id else None

    @property
    def connected(self) -> bool:
        return self._zk.state == KazooState.CONNECTED

    def add_listener(self, cb: StateListener) -> None:
        self._listeners.append(cb)

    def remove_listener(self, cb: StateListener) -> None:
        if cb in self._listeners:
            self._listeners.remove(cb)

    def _on_state(self, state: str) -> None:
        # kazoo's connection thread: no blocking, no ZooKeeper calls here.
        if state == KazooState.LOST:
            with self._lost:
                self._losses += 1
                self._lost.notify_all()
        for cb in list(self._listeners):
            call_quietly(cb, str(state))

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a new kazoo worker thread; its exceptions are logged."""
        self._zk.handler.spawn(call_quietly, fn, *args)

    # -- operations ---------------------------------------------------------------------------

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False, sequence: bool = False,
               makepath: bool = False) -> str:
        with self._translated(f"create {path}"):
            return self._zk.create(path, value, ephemeral=ephemeral, sequence=sequence, makepath=makepath)

    def get(self, path: str) -> tuple[bytes, Stat]:
        with self._translated(f"get {path}"):
            data, stat = self._zk.retry(self._zk.get, path)
        return data, _stat(stat)

    def set(self, path: str, value: bytes, version: int = -1) -> Stat:
        with self._translated(f"set {path}"):
            return _stat(self._zk.set(path, value, version=version))

    def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        with self._translated(f"delete {path}"):
            self._zk.delete(path, version=version, recursive=recursive)

    def exists(self, path: str) -> Stat | None:
        with self._translated(f"exists {path}"):
            stat = self._zk.retry(self._zk.exists, path)
        return None if stat is None else _stat(stat)

    def children(self, path: str) -> list[str]:
        with self._translated(f"children of {path}"):
            return list(self._zk.retry(self._zk.get_children, path))

    def ensure_path(self, path: str) -> None:
        with self._translated(f"ensure_path {path}"):
            self._zk.retry(self._zk.ensure_path, path)

    def transaction(self) -> _ZkTransaction:
        return _ZkTransaction(self)

    def secure_tree(self, root: str) -> int:
        """Give ``root`` and every znode under it this session's digest ACL (no credentials: nothing);
        returns how many znodes changed. Turns security on for a cluster that ran without it."""
        if self._acl is None:
            return 0
        changed = 0
        todo = [root]
        while todo:
            path = todo.pop()
            with self._translated(f"secure {path}"):
                try:
                    acls, znode = self._zk.retry(self._zk.get_acls, path)
                    if list(acls) != self._acl:
                        self._zk.retry(self._zk.set_acls, path, self._acl, znode.aversion)
                        changed += 1
                    todo.extend(f"{path}/{c}" for c in self._zk.retry(self._zk.get_children, path))
                except NoNodeError:
                    continue  # deleted meanwhile
        return changed

    def watch_children(self, path: str, cb: ChildrenCallback) -> None:
        def on_children(children: list[str]) -> bool | None:
            return call_quietly(cb, list(children))

        with self._translated(f"watch children of {path}"):
            ChildrenWatch(self._zk, path, on_children)

    def watch_data(self, path: str, cb: DataCallback) -> None:
        # kazoo calls on_data(data, stat, event) if it can; the event is not part of our contract.
        def on_data(data: bytes | None, stat: ZnodeStat | None, event: Any = None) -> bool | None:
            return call_quietly(cb, data, None if stat is None else _stat(stat))

        with self._translated(f"watch data of {path}"):
            DataWatch(self._zk, path, on_data)

    # -- fault injection, for tests ------------------------------------------------------------

    def expire_session(self, timeout: float = 10.0) -> None:
        """Really expire this session on the server, as a long partition would.

        A second client takes the session over by id and password and closes
        it: the server ends the session and deletes its ephemeral znodes, and
        this client learns on its next contact that the session expired
        (LOST), then opens a new one. Returns once LOST was delivered.
        """
        client_id = self._zk.client_id
        if client_id is None:
            raise StorageError("expire_session: not connected, so there is no session to expire")
        with self._lost:
            losses = self._losses
        thief = KazooClient(",".join(self.servers), client_id=client_id, timeout=self.session_timeout)
        try:
            with self._translated(f"taking over session {client_id[0]:#x}"):
                thief.start(timeout=timeout)
            if thief.client_id is None or thief.client_id[0] != client_id[0]:
                raise StorageError(f"could not take over session {client_id[0]:#x} to expire it")
        finally:
            thief.stop()
            thief.close()
        with self._lost:
            if not self._lost.wait_for(lambda: self._losses > losses, timeout):
                raise StorageTimeout(f"session {client_id[0]:#x} did not expire within {timeout:g} s")

    def drop_connection(self) -> None:
        """Break the TCP connection (SUSPENDED); the session survives and kazoo reconnects."""
        self._zk._call(_CONNECTION_DROP, None)


class _ZkTransaction:
    def __init__(self, storage: ZkStorage):
        self._storage = storage
        self._txn = storage._zk.transaction()
        self._paths: list[str] = []

    def check(self, path: str, version: int) -> None:
        self._paths.append(path)
        self._txn.check(path, version)

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False, sequence: bool = False) -> None:
        self._paths.append(path)
        self._txn.create(path, value, ephemeral=ephemeral, sequence=sequence)

    def set_data(self, path: str, value: bytes, version: int = -1) -> None:
        self._paths.append(path)
        self._txn.set_data(path, value, version=version)

    def delete(self, path: str, version: int = -1) -> None:
        self._paths.append(path)
        self._txn.delete(path, version=version)

    def commit(self) -> list[TxnResult]:
        with self._storage._translated(f"transaction on {', '.join(self._paths)}"):
            results = self._txn.commit()
        return [_storage_error(r, f"transaction op on {path}") if isinstance(r, Exception)
                else _stat(r) if isinstance(r, ZnodeStat) else r
                for r, path in zip(results, self._paths)]
