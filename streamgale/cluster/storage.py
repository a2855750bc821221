"""The raw storage under the cluster state: the few ZooKeeper operations it needs.

:class:`Storage` is what :class:`~streamgale.cluster.state.ClusterState`, the
election (:mod:`.election`) and the code store (:mod:`.code_store`) are written
against. Two implementations: :class:`~streamgale.cluster.zk_storage.ZkStorage`
(kazoo, the real thing) and :class:`~streamgale.cluster.memory_storage.MemoryStorage`
(in-process, for tests). Nothing above this layer sees kazoo or its exceptions:
every failure is a :class:`StorageError`.

Semantics are ZooKeeper's: a znode has data and a version (0 when created, +1
per write; ``version=-1`` means "any"); an ephemeral znode belongs to the
session that made it and goes when that session ends; a sequential create
appends the number of children the parent has had created (10 digits) to the name.

Threads, as kazoo's rules have them: a watch's first call happens in the
caller's thread, later ones on the storage's event thread; connection-state
listeners run on a storage thread too. Callbacks must return quickly and must
not block; listeners must not call the storage at all (hand the work to
:meth:`Storage.spawn`). An exception raised by a callback is logged and does
not stop the watch or the other listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

log = logging.getLogger(__name__)

CONNECTED, SUSPENDED, LOST = "CONNECTED", "SUSPENDED", "LOST"
"""Connection states given to listeners: SUSPENDED means the connection dropped
but the session may live (do not trust leadership); LOST means the session and
its ephemeral znodes are gone (a new session follows, then CONNECTED)."""

StateListener = Callable[[str], None]
ChildrenCallback = Callable[[list[str]], "bool | None"]
DataCallback = Callable[[bytes | None, "Stat | None"], "bool | None"]


class Stat(NamedTuple):
    """What the cluster state reads of a znode's metadata."""

    version: int
    ephemeral_owner: int  # the owning session's id; 0 for a persistent znode


class StorageError(Exception):
    """The storage failed; the message names the operation and the path."""


class NoNode(StorageError):
    """The znode does not exist."""


class NodeExists(StorageError):
    """The znode to create exists already."""


class BadVersion(StorageError):
    """The znode's version is not the one the operation was conditional on."""


class NotEmpty(StorageError):
    """The znode to delete has children."""


class RolledBack(StorageError):
    """This operation of a transaction was fine, but another one failed: nothing was applied."""


class StorageTimeout(StorageError):
    """The storage did not answer in time."""


TxnResult = Any  # str (path created) | Stat (set_data) | True (check, delete) | StorageError


class Transaction(Protocol):
    """Operations applied all together or not at all by :meth:`commit`."""

    def check(self, path: str, version: int) -> None:
        """Require ``path`` to exist at ``version`` (-1: any version)."""

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False, sequence: bool = False) -> None: ...

    def set_data(self, path: str, value: bytes, version: int = -1) -> None: ...

    def delete(self, path: str, version: int = -1) -> None: ...

    def commit(self) -> list[TxnResult]:
        """One result per operation, in order: the created path, the new Stat, or True.

        If one operation fails, nothing is applied: its result is its
        StorageError (NoNode, NodeExists, BadVersion, NotEmpty) and every
        other result is a :class:`RolledBack`. Raises StorageError only when
        the storage cannot be reached.
        """


class Storage(Protocol):
    """One client session of a ZooKeeper-like store. Operations may be called from any
    thread except the listener thread; they block on a round trip and raise StorageError."""

    @property
    def session_id(self) -> int | None:
        """The current session's id (owner of its ephemerals), None while not connected."""

    @property
    def connected(self) -> bool: ...

    def start(self, timeout: float) -> None:
        """Connect, blocking up to ``timeout`` s; StorageTimeout names what was unreachable."""

    def close(self) -> None:
        """End the session (its ephemerals go at once) and every watch; listeners get LOST."""

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False, sequence: bool = False,
               makepath: bool = False) -> str:
        """Create a znode and return its path (with the sequence suffix, if sequential).
        ``makepath`` creates missing parents (persistent, empty)."""

    def get(self, path: str) -> tuple[bytes, Stat]: ...

    def set(self, path: str, value: bytes, version: int = -1) -> Stat: ...

    def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        """Delete a znode. ``recursive`` deletes its subtree too, ignores ``version`` and
        is no error if ``path`` is absent; it raises NotEmpty if children keep appearing."""

    def exists(self, path: str) -> Stat | None: ...

    def children(self, path: str) -> list[str]:
        """The child names, in no particular order."""

    def ensure_path(self, path: str) -> None:
        """Create ``path`` and its missing parents (persistent, empty)."""

    def transaction(self) -> Transaction: ...

    def secure_tree(self, root: str) -> int:
        """Lock ``root`` and everything under it to this session's credentials, if it has any;
        returns how many nodes changed."""

    def watch_children(self, path: str, cb: ChildrenCallback) -> None:
        """Call ``cb(children)`` now and whenever they change (also after a reconnection).
        ``path`` must exist: if it is deleted the watch ends. ``cb`` returning False ends it."""

    def watch_data(self, path: str, cb: DataCallback) -> None:
        """Call ``cb(data, stat)`` now and on every change; ``(None, None)`` while ``path``
        does not exist (its creation is seen). ``cb`` returning False ends the watch."""

    def add_listener(self, cb: StateListener) -> None:
        """Call ``cb(CONNECTED | SUSPENDED | LOST)`` on every connection change, in the
        order listeners were added. ``cb`` must not block and must not call the storage."""

    def remove_listener(self, cb: StateListener) -> None: ...

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a storage worker thread (work a listener must not do itself)."""


def call_quietly(cb: Callable[..., Any], *args: Any) -> Any:
    """``cb(*args)``, logging instead of raising: a failing callback must not kill a storage thread."""
    try:
        return cb(*args)
    except Exception:  # noqa: BLE001 - any callback failure is logged and survived
        log.exception("storage callback %r failed", cb)
        return None


def delete_tree(storage: Storage, path: str) -> None:
    """Delete ``path`` and everything under it (no-op if absent), retrying while children appear."""
    for _ in range(5):
        try:
            storage.delete(path, recursive=True)
            return
        except NotEmpty:
            continue
    raise StorageError(f"cannot delete {path}: children keep appearing")
