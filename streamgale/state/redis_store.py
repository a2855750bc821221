"""The ``redis`` state backend: every namespace in one redis server (``topology.state.redis.url``).

Keys of namespace ``ns`` (the braces are a hash tag: on a Redis Cluster the three
keys of a namespace share a slot, so one transaction may touch them all):

- ``streamgale:state:{ns}:data``: hash, committed key -> value;
- ``streamgale:state:{ns}:txid``: string, the txid they were committed at (missing: 0);
- ``streamgale:state:{ns}:prepared``: hash with fields ``txid``, ``changes`` (a msgpack
  map of key -> value, or nil for a delete) and ``held``; missing when nothing is prepared.

Each write is one MULTI/EXEC transaction; :meth:`RedisStore.commit` WATCHes the prepared
hash, so it applies the changes only if the transaction it read is still the prepared one.
Durability is the server's: a returned ``prepare`` survives a redis restart only with
``appendonly yes`` (``appendfsync always`` for a power cut too).

Each call makes one attempt: a lost connection raises :class:`StateError` at once and the
checkpoint protocol decides what to retry; the next call reconnects. A store is used by one
thread at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .store import Changes, StateError, decode_changes, encode_changes

SETTING = "topology.state.redis.url"
CONNECT_TIMEOUT_S = 2.5  # an unreachable server fails ``open`` fast
COMMAND_TIMEOUT_S = 10.0  # a commit of many keys is one round trip, far below this
_WATCH_RETRIES = 5  # a commit overtaken by another writer of the namespace re-reads this often
T = TypeVar("T")


def key_prefix(namespace: str) -> str:
    return f"streamgale:state:{{{namespace}}}:"


def shown_url(url: str) -> str:
    """``url`` with its password (if any) masked, for error messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return urlunsplit(parts._replace(netloc=user + netloc))
    except ValueError:
        return "<unparsable URL>"




class RedisStore:
    """One namespace's state on a redis server; see the module docstring for the key layout."""

    def __init__(self, client: redis.Redis, url: str, namespace: str):
        self._client = client
        self._url = shown_url(url)
        self._ns = namespace
        prefix = key_prefix(namespace)
        self._data = prefix + "data"
        self._txid = prefix + "txid"
        self._prepared = prefix + "prepared"

    @classmethod
    def open(cls, url: str, namespace: str, connect_timeout: float = CONNECT_TIMEOUT_S,
             timeout: float = COMMAND_TIMEOUT_S) -> RedisStore:
        """Connect to ``url`` and check that the server answers (blocks up to about
        ``connect_timeout`` + ``timeout`` s); raises :class:`StateError` if it does not."""
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=timeout,
                                          retry=Retry(NoBackoff(), 0))
        except ValueError as e:
            raise StateError(f"{SETTING} is {shown_url(url)!r}, which is not a redis URL ({e}); "
                             f"write it as redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0") from e
        try:
            client.ping()
        except redis.RedisError as e:
            client.close()
            raise StateError(f"{SETTING} is {shown_url(url)!r}, but no redis server answers there ({e}): "
                             f"is redis-server running there? Start it, or point {SETTING} at one") from e
        return cls(client, url, namespace)

    def load(self) -> tuple[int, dict[bytes, bytes]]:
        def read(pipe: Any) -> None:
            pipe.get(self._txid)
            pipe.hgetall(self._data)

        txid, data = self._transaction("load", read)
        return (0 if txid is None else int(txid)), dict(data)

    def prepared(self) -> tuple[int, bytes] | None:
        fields = self._call("prepared", lambda: cast(list[Any], self._client.hmget(self._prepared, ["txid", "held"])))
        txid, held = fields
        return None if txid is None else (int(txid), held)

    def prepare(self, txid: int, changes: Changes, held: bytes) -> None:
        fields = {"txid": txid, "changes": encode_changes(changes), "held": held}

        def write(pipe: Any) -> None:
            pipe.delete(self._prepared)
            pipe.hset(self._prepared, mapping=fields)

        self._transaction("prepare", write)

    def commit(self, txid: int) -> bytes | None:
        return self._call("commit", lambda: self._commit(txid))

    def rollback(self) -> bytes | None:
        def drop(pipe: Any) -> None:
            pipe.hget(self._prepared, "held")
            pipe.delete(self._prepared)

        held, _ = self._transaction("rollback", drop)
        return held

    def close(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()

    def _commit(self, txid: int) -> bytes | None:
        with self._client.pipeline(transaction=True) as pipe:
            for _ in range(_WATCH_RETRIES):
                try:
                    pipe.watch(self._prepared)
                    prep = cast(dict[bytes, bytes], pipe.hgetall(self._prepared))
                    if not prep or int(prep[b"txid"]) != txid:
                        pipe.unwatch()
                        return None
                    changes = self._decode(prep[b"changes"])
                    puts: dict[Any, Any] = {k: v for k, v in changes.items() if v is not None}
                    deletes = [k for k, v in changes.items() if v is None]
                    pipe.multi()
                    if puts:
                        pipe.hset(self._data, mapping=puts)
                    if deletes:
                        pipe.hdel(self._data, *deletes)
                    pipe.set(self._txid, txid)
                    pipe.delete(self._prepared)
                    pipe.execute()
                    return prep[b"held"]
                except redis.WatchError:  # the prepared hash changed under us: read it again
                    continue
        raise StateError(f"commit of state namespace {self._ns!r} on {self._url} ({SETTING}) was overtaken "
                         f"{_WATCH_RETRIES} times by another writer of the namespace: is a second task "
                         f"running with the same namespace?")

    def _transaction(self, op: str, queue: Callable[[Any], None]) -> list[Any]:
        """Run the commands ``queue`` adds to a pipeline as one MULTI/EXEC; their replies."""
        def run() -> list[Any]:
            with self._client.pipeline(transaction=True) as pipe:
                queue(pipe)
                replies: list[Any] = pipe.execute()
                return replies

        return self._call(op, run)

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as e:
            raise StateError(f"{op} of state namespace {self._ns!r} on {self._url} ({SETTING}) failed: {e}; "
                             f"is redis-server running there?") from e

    def _decode(self, blob: bytes) -> dict[bytes, bytes | None]:
        try:
            return decode_changes(blob)
        except ValueError as e:
            raise StateError(f"the prepared transaction of state namespace {self._ns!r} on {self._url} "
                             f"({SETTING}) is corrupt: {e}") from e
