"""Where a stateful task's committed state lives: the one small interface every backend implements.

A :class:`StateStore` holds the state of one namespace (one component task,
or the checkpoint spout): its committed key/value pairs and the txid they were
committed at, plus at most one *prepared* transaction: the changes since the
last commit and an opaque ``held`` blob (the encoded acks the task holds back
until the commit), written durably by :meth:`prepare` and made the committed
state by :meth:`commit`. Keys and values cross this interface already
msgpack-encoded (``bytes``); a store never decodes them, and nothing is ever
pickled.

The protocol calls, per namespace, from one thread:

- ``load()`` when a task starts and after a rollback;
- ``prepare(txid, changes, held)`` at PREPARE (replacing any earlier prepared transaction);
- ``commit(txid)`` at COMMIT: applies the prepared changes atomically iff the
  prepared txid is ``txid``, and returns the held blob; a second commit of the same
  txid (a retried COMMIT, or one delivered to a restarted task) returns None and
  changes nothing;
- ``rollback()`` at ROLLBACK: drops the prepared transaction, returns its held blob.

A backend is chosen per topology (``topology.state.backend``) and registered by
name in :data:`BACKENDS`: a callable ``(config, namespace) -> StateStore``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import msgpack

if TYPE_CHECKING:
    from streamgale.config import Config

Changes = Mapping[bytes, "bytes | None"]  # key -> new value, None: deleted


def encode_changes(changes: Changes) -> bytes:
    """A prepared transaction's changes as one msgpack map (for stores that keep them as a blob)."""
    return msgpack.packb(dict(changes), use_bin_type=True)


def decode_changes(blob: bytes) -> dict[bytes, bytes | None]:
    changes = msgpack.unpackb(blob, raw=False)
    if not isinstance(changes, dict):
        raise ValueError(f"prepared changes are a msgpack {type(changes).__name__}, not a map")
    return changes


class StateError(RuntimeError):
    """A state backend cannot be used (unreachable server, bad file); the message says how to fix it."""


class StateStore(Protocol):
    def load(self) -> tuple[int, dict[bytes, bytes]]:
        """The committed txid (0: nothing committed yet) and the committed key/value pairs."""

    def prepared(self) -> tuple[int, bytes] | None:
        """The prepared transaction's txid and held blob, or None."""

    def prepare(self, txid: int, changes: Changes, held: bytes) -> None:
        """Durably record ``changes`` (since the last commit) and ``held`` as transaction ``txid``."""

    def commit(self, txid: int) -> bytes | None:
        """Apply prepared transaction ``txid`` atomically; its held blob, or None if none is prepared
        under ``txid`` (already committed, or rolled back)."""

    def rollback(self) -> bytes | None:
        """Drop the prepared transaction; its held blob, or None if there was none."""

    def close(self) -> None:
        """Release connections and files."""


class MemoryStore:
    """Not durable: lives as long as its process (local mode, tests). Stores of one
    :class:`MemorySpace` share it, so tasks restarted in the same process find their state."""

    def __init__(self, space: MemorySpace, namespace: str):
        self._space = space
        self._ns = namespace

    def load(self) -> tuple[int, dict[bytes, bytes]]:
        txid, data, _ = self._space.get(self._ns)
        return txid, dict(data)

    def prepared(self) -> tuple[int, bytes] | None:
        prep = self._space.get(self._ns)[2]
        return None if prep is None else (prep[0], prep[2])

    def prepare(self, txid: int, changes: Changes, held: bytes) -> None:
        txid_c, data, _ = self._space.get(self._ns)
        self._space.namespaces[self._ns] = (txid_c, data, (txid, dict(changes), held))

    def commit(self, txid: int) -> bytes | None:
        _, data, prep = self._space.get(self._ns)
        if prep is None or prep[0] != txid:
            return None
        data = dict(data)
        for k, v in prep[1].items():
            if v is None:
                data.pop(k, None)
            else:
                data[k] = v
        self._space.namespaces[self._ns] = (txid, data, None)
        return prep[2]

    def rollback(self) -> bytes | None:
        txid, data, prep = self._space.get(self._ns)
        self._space.namespaces[self._ns] = (txid, data, None)
        return None if prep is None else prep[2]

    def close(self) -> None:
        pass


class MemorySpace:
    """The memory backend's data: namespace -> (committed txid, data, prepared (txid, changes, held) or None)."""

    def __init__(self) -> None:
        self.namespaces: dict[str, tuple[int, dict[bytes, bytes],
                                         tuple[int, dict[bytes, bytes | None], bytes] | None]] = {}

    def get(self, ns: str) -> tuple[int, dict[bytes, bytes], tuple[int, dict[bytes, bytes | None], bytes] | None]:
        return self.namespaces.get(ns, (0, {}, None))


MEMORY = MemorySpace()  # the process's memory backend


def memory_store(config: Config, namespace: str) -> StateStore:
    return MemoryStore(MEMORY, namespace)


def sqlite_store(config: Config, namespace: str) -> StateStore:
    from .sqlite_store import SqliteStore

    return SqliteStore.open(config["topology.state.sqlite.path"], namespace)


def redis_store(config: Config, namespace: str) -> StateStore:
    from .redis_store import RedisStore

    return RedisStore.open(config["topology.state.redis.url"], namespace)


StoreFactory = Callable[["Config", str], StateStore]

#: Backend name -> factory; ``topology.state.backend`` picks one.
BACKENDS: dict[str, StoreFactory] = {"memory": memory_store, "sqlite": sqlite_store, "redis": redis_store}


def open_store(config: Config, namespace: str) -> StateStore:
    """The store of ``namespace`` in the topology's configured backend."""
    name = config["topology.state.backend"]
    factory = BACKENDS.get(name)
    if factory is None:
        raise StateError(f"topology.state.backend is {name!r}, which is not a state backend; "
                         f"use one of: {', '.join(sorted(BACKENDS))}")
    return factory(config, namespace)


def check_backend(config: Config) -> None:
    """Raise :class:`StateError` now if the configured backend cannot be opened (local mode
    checks before it starts; on a cluster each worker's stateful tasks open it at prepare)."""
    open_store(config, "__check__").close()
