"""Redis connectors: a Streams source, stream and key/value sinks, and an exactly-once sink.

- :class:`RedisStreamSpout` reads a stream through a consumer group (``XREADGROUP``),
  ``XACK``\\ s an entry once its tuple tree is acked, re-reads its own pending entries at
  start (a restarted task replays what it had not acked), reclaims the pending entries of
  dead consumers (``XAUTOCLAIM`` after ``claim_idle`` seconds) and dead-letters to a stream.
- :class:`RedisStreamSink` (``XADD``) and :class:`RedisKeyValueSink` (``SET``/``HSET``):
  at-least-once :class:`~streamgale.connectors.sink.SinkBolt`\\ s, one pipeline per batch.
- :class:`RedisCommitSink`: a :class:`~streamgale.state.StatefulBolt` that writes its
  outputs at checkpoint commit, two-phase keyed by txid, so each input's output lands
  exactly once through rollbacks and worker kills.

Settings: every setting is a class attribute (subclass to declare a connector, as with
``outputs``); the config key named next to it (the component's config layered on the
topology's, e.g. ``topology.spout("in", Spout, config={"redis.stream": "orders"})`` or
``-c redis.url=redis://host:6379/0`` at submit) overrides it. Invalid or missing
settings raise :class:`RedisConnectorError` naming the setting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streamgale.components import TopologyContext
from streamgale.state import StatefulBolt
from streamgale.tuples import Tuple

from .sink import SinkBolt
from .source import Message, SourceSpout

log = logging.getLogger("streamgale.connectors")

__all__ = ["RedisCommitSink", "RedisConnectorError", "RedisKeyValueSink", "RedisStreamSink", "RedisStreamSpout",
           "StreamMessage"]


class RedisConnectorError(ValueError):
    """A Redis connector's setting is missing or invalid (the message names it)."""


def _setting(obj: Any, config: Mapping[str, Any], key: str, attr: str) -> Any:
    """The config key ``key`` if set, else the class attribute ``attr``."""
    value = config.get(key)
    return getattr(obj, attr) if value is None else value


def _required_str(obj: Any, config: Mapping[str, Any], key: str, attr: str, what: str) -> str:
    value = _setting(obj, config, key, attr)
    if not isinstance(value, str) or not value:
        raise RedisConnectorError(f"{type(obj).__name__} needs {what}: set config key '{key}' or the class "
                                  f"attribute '{attr}' (a non-empty string), got {value!r}")
    return value


def _number(obj: Any, config: Mapping[str, Any], key: str, attr: str, minimum: float = 0.0) -> float:
    value = _setting(obj, config, key, attr)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number >= minimum:
        raise RedisConnectorError(f"{type(obj).__name__}: config key '{key}' (class attribute '{attr}') must be "
                                  f"a number >= {minimum:g}, got {value!r}")
    return number


def _client(url: str, socket_timeout: float) -> Any:  # redis.Redis (its stubs type replies loosely)
    # No retries inside redis-py (they sleep in the caller's loop): a connection error reaches the
    # connector's base class, which counts it and reconnects with backoff without blocking.
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=socket_timeout,
                                    retry=Retry(NoBackoff(), 0))
    except ValueError as exc:
        raise RedisConnectorError(f"config key 'redis.url' is not a Redis URL ({exc}): {url!r}") from None


def _encode(value: Any) -> bytes | str | int | float:
    """A tuple value as Redis stores it: str, bytes, int and float as they are, anything else as JSON."""
    if isinstance(value, (str, bytes, float)) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return json.dumps(value)


def _tuple_fields(tup: Tuple, wanted: Sequence[str] | None) -> dict[str, Any]:
    names = tup.fields if wanted is None else wanted
    return {name: _encode(tup[name]) for name in names}


# -- the source ------------------------------------------------------------------------------------


@dataclass
class StreamMessage(Message):
    """A stream entry: its id, the values to emit, and the raw fields (for dead-lettering)."""

    raw: dict[bytes, bytes] = field(default_factory=dict, compare=False, repr=False)


class RedisStreamSpout(SourceSpout):
    """A Redis stream through a consumer group (see the module docstring for the settings rule).

    Declare the entry fields to emit: ``fields = {"body": "sentence"}`` (entry field ->
    tuple field) or ``fields = ["body"]`` (same names); ``outputs`` follows from it (plus
    ``id_field``, the entry id, if set). Values are UTF-8 strings (``decode = "utf-8"``,
    an entry that does not decode is dead-lettered) or bytes (``decode = None``); a field
    missing from an entry is None.

    Consumer: one per task, ``<topology>-<component>-<task>``, stable across restarts.
    """

    url: ClassVar[str | None] = None  # redis.url
    stream_key: ClassVar[str | None] = None  # redis.stream
    group: ClassVar[str | None] = None  # redis.group (default: the component's name)
    dead_letter_stream: ClassVar[str | None] = None  # redis.dead_letter_stream
    claim_idle: ClassVar[float] = 30.0  # redis.claim_idle: seconds before a dead consumer's entry is taken
    block_ms: ClassVar[int] = 0  # redis.block_ms: XREADGROUP BLOCK; 0 = do not block (not Redis's "forever")
    start_id: ClassVar[str] = "0"  # where a group the spout creates starts: "0" the whole stream, "$" new entries
    socket_timeout: ClassVar[float] = 2.0  # a server that stops answering stalls the spout this long at most
    fields: ClassVar[Sequence[str] | Mapping[str, str]] = ()
    id_field: ClassVar[str | None] = None
    decode: ClassVar[str | None] = "utf-8"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "fields" in cls.__dict__ and "outputs" not in cls.__dict__:
            mapping = cls._field_map()
            cls.outputs = list(mapping.values()) + ([cls.id_field] if cls.id_field else [])

    @classmethod
    def _field_map(cls) -> dict[str, str]:
        f = cls.fields
        mapping = dict(f) if isinstance(f, Mapping) else {str(n): str(n) for n in f}
        if not mapping or not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in mapping.items()):
            raise RedisConnectorError(f"{cls.__name__}.fields must name the entry fields to emit: a list of names "
                                      f"or a mapping entry field -> tuple field, got {f!r}")
        return mapping

    # -- settings and lifecycle ---------------------------------------------------------------

    def open(self, context: TopologyContext) -> None:
        config = context.config
        self._url = _required_str(self, config, "redis.url", "url", "the server's URL")
        self._key = _required_str(self, config, "redis.stream", "stream_key", "the stream to read")
        self._group = _setting(self, config, "redis.group", "group") or context.component
        if not isinstance(self._group, str):
            raise RedisConnectorError(f"config key 'redis.group' must be a string, got {self._group!r}")
        dls = _setting(self, config, "redis.dead_letter_stream", "dead_letter_stream")
        if dls is not None and (not isinstance(dls, str) or not dls):
            raise RedisConnectorError(f"config key 'redis.dead_letter_stream' must be a stream name, got {dls!r}")
        self._dls: str | None = dls
        self._claim_idle_ms = int(_number(self, config, "redis.claim_idle", "claim_idle") * 1000)
        self._block = int(_number(self, config, "redis.block_ms", "block_ms"))
        if self._block > 50:
            raise RedisConnectorError(f"config key 'redis.block_ms' must be at most 50 (the spout must not block its "
                                      f"loop), got {self._block}")
        if self.decode is not None:
            "".encode(self.decode)  # an unknown codec raises LookupError here, not per entry
        self._fields = [(k.encode(), v) for k, v in self._field_map().items()]
        self._consumer = f"{context.topology}-{context.component}-{context.task_id}"
        self._client: Any = None
        self._cursor: str | None = "0-0"  # own pending entries first (None: new entries only, ">")
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_touch = 0.0
        self._group_pending: int | None = None
        super().open(context)
        self.stats.update({"claimed": 0, "replayed_pending": 0})

    def connect(self) -> None:
        client = _client(self._url, self.socket_timeout)
        try:
            client.xgroup_create(self._key, self._group, id=self.start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                client.close()
                raise
        except Exception:
            client.close()
            raise
        self._client = client
        self._cursor = "0-0"  # after every (re)connect: what the server still has pending for us comes first

    def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- reading ------------------------------------------------------------------------------

    def _message(self, entry_id: bytes, raw: dict[bytes, bytes] | None) -> StreamMessage | None:
        msg_id = entry_id.decode()
        if raw is None:  # deleted from the stream while pending: nothing to process
            assert self._client is not None
            self._client.xack(self._key, self._group, msg_id)
            return None
        try:
            values: list[Any] = []
            for name, _ in self._fields:
                v = raw.get(name)
                values.append(v.decode(self.decode) if v is not None and self.decode is not None else v)
        except UnicodeDecodeError as exc:
            message = StreamMessage(msg_id, [], raw=raw)
            self.stats["dead_lettered"] += 1
            self.dead_letter(message, f"a field does not decode as {self.decode} ({exc})")
            return None
        if self.id_field:
            values.append(msg_id)
        return StreamMessage(msg_id, values, raw=raw)

    def _read(self, entries: Any) -> list[StreamMessage]:
        out = []
        for entry_id, raw in entries:
            m = self._message(entry_id, raw)
            if m is not None:
                out.append(m)
        return out

    def fetch(self, limit: int) -> Sequence[Message]:
        client = self._client
        assert client is not None
        now = self.clock()
        out: list[StreamMessage] = []
        if self._cursor is not None:  # replay what this consumer had not acked (a restarted task)
            reply = client.xreadgroup(self._group, self._consumer, {self._key: self._cursor}, count=limit)
            entries = reply[0][1] if reply else []
            if not entries:
                self._cursor = None
            else:
                self._cursor = entries[-1][0].decode()
                out = self._read(entries)
                self.stats["replayed_pending"] += len(out)
                return out
        if self._claim_idle_ms and now >= self._next_claim:
            out = self._claim(client, limit)
            if out:
                return out
        if now >= self._next_touch and self._pending:
            self._touch(client)
        reply = client.xreadgroup(self._group, self._consumer, {self._key: ">"}, count=limit,
                                  block=self._block or None)
        return self._read(reply[0][1]) if reply else []

    def _claim(self, client: Any, limit: int) -> list[StreamMessage]:
        """Take over entries another consumer (a dead task) left pending for ``claim_idle``."""
        cursor, entries, _deleted = client.xautoclaim(self._key, self._group, self._consumer,
                                                      self._claim_idle_ms, start_id=self._claim_cursor, count=limit)
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor in ("0-0", "0"):  # a full pass: rest a while
            self._claim_cursor = "0-0"
            self._next_claim = self.clock() + self._claim_idle_ms / 4000
        out = [m for m in self._read(entries) if m.id not in self._pending]
        self.stats["claimed"] += len(out)
        return out

    def _touch(self, client: Any) -> None:
        """Reset the idle time of the entries in flight here, so no other task claims them."""
        self._next_touch = self.clock() + self._claim_idle_ms / 3000
        ids = list(self._pending)
        for start in range(0, len(ids), 1000):
            client.xclaim(self._key, self._group, self._consumer, 0, ids[start:start + 1000], justid=True)

    # -- the broker side of acks and failures -------------------------------------------------

    def commit(self, ids: list[Hashable]) -> None:
        if ids:
            assert self._client is not None
            self._client.xack(self._key, self._group, *ids)

    def dead_letter(self, message: Message, reason: str) -> None:
        if self._dls is None:
            super().dead_letter(message, reason)
            return
        assert self._client is not None
        raw = dict(getattr(message, "raw", {}) or {})
        raw.update({b"_source_stream": self._key, b"_source_id": str(message.id), b"_reason": reason,
                    b"_attempts": message.attempts})
        pipe = self._client.pipeline(transaction=True)
        pipe.xadd(self._dls, raw)
        pipe.xack(self._key, self._group, message.id)
        pipe.execute()
        log.warning("%s: entry %s dead-lettered to %s after %d attempts (%s)", self._name, message.id, self._dls,
                    message.attempts, reason)

    def lag(self) -> int | None:
        """Entries of the stream not yet delivered to the group (XINFO GROUPS ``lag``), or,
        where Redis cannot tell (entries deleted), the group's pending count."""
        if self._client is None:
            return None
        for g in self._client.xinfo_groups(self._key):
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self._group:
                self._group_pending = int(g.get("pending") or 0)
                lag = g.get("lag")
                return int(lag) if lag is not None else self._group_pending
        return None

    def counters(self) -> dict[str, Any]:
        out = super().counters()
        out["group_pending"] = self._group_pending
        return out


# -- at-least-once sinks ---------------------------------------------------------------------------


class _RedisSink(SinkBolt):
    url: ClassVar[str | None] = None  # redis.url
    socket_timeout: ClassVar[float] = 5.0

    def prepare(self, context: TopologyContext) -> None:
        super().prepare(context)
        self._url = _required_str(self, context.config, "redis.url", "url", "the server's URL")
        self._client: Any = None

    def connect(self) -> None:
        client = _client(self._url, self.socket_timeout)
        try:
            client.ping()
        except Exception:
            client.close()
            raise
        self._client = client

    def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class RedisStreamSink(_RedisSink):
    """``XADD`` each tuple to ``stream_key`` (config ``redis.sink.stream``), one pipeline per batch.

    ``fields``: the tuple fields to write (default: all of them); ``maxlen``: approximate
    trimming (``MAXLEN ~``). At-least-once: a replayed input is written again.
    """

    stream_key: ClassVar[str | None] = None  # redis.sink.stream
    fields: ClassVar[Sequence[str] | None] = None
    maxlen: ClassVar[int | None] = None

    def prepare(self, context: TopologyContext) -> None:
        super().prepare(context)
        self._key = _required_str(self, context.config, "redis.sink.stream", "stream_key", "the stream to write")

    def write(self, tuples: list[Tuple]) -> None:
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        for tup in tuples:
            pipe.xadd(self._key, _tuple_fields(tup, self.fields), maxlen=self.maxlen,
                      approximate=True)
        pipe.execute()


class RedisKeyValueSink(_RedisSink):
    """``SET <key_prefix><key> <value>``, or with ``hash_key`` (config ``redis.sink.hash``)
    ``HSET <hash_key> <key> <value>``, where key and value are the tuple's ``key_field`` and
    ``value_field``; one pipeline per batch. Idempotent per key (the last write wins)."""

    key_field: ClassVar[str | None] = None
    value_field: ClassVar[str | None] = None
    key_prefix: ClassVar[str] = ""
    hash_key: ClassVar[str | None] = None  # redis.sink.hash

    def prepare(self, context: TopologyContext) -> None:
        super().prepare(context)
        for attr in ("key_field", "value_field"):
            if not isinstance(getattr(self, attr), str) or not getattr(self, attr):
                raise RedisConnectorError(f"{type(self).__name__} needs the class attribute '{attr}' (a tuple "
                                          f"field name), got {getattr(self, attr)!r}")
        self._hash = _setting(self, context.config, "redis.sink.hash", "hash_key")

    def write(self, tuples: list[Tuple]) -> None:
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        for tup in tuples:
            key, value = tup[self.key_field], _encode(tup[self.value_field])  # type: ignore[index]
            if self._hash:
                pipe.hset(self._hash, str(key), value)
            else:
                pipe.set(f"{self.key_prefix}{key}", value)
        pipe.execute()


# -- the exactly-once sink -------------------------------------------------------------------------

TXID_KEY = "redis_commit_sink.txid"  # in the task's state: the txid of the last batch staged


class RedisCommitSink(StatefulBolt):
    """Writes its inputs to Redis at checkpoint commit: each input's output exactly once.

    Target: a stream (``stream_key``, config ``redis.sink.stream``: ``XADD`` of the tuple's
    ``fields``, default all) or a hash (``hash_key``, config ``redis.sink.hash``: ``HSET``
    of ``key_field`` -> ``value_field``).

    Two phases keyed by the checkpoint's txid, per task:

    - ``process`` buffers the record; at ``pre_prepare(txid)`` the buffer is staged in
      Redis (``HSET <prefix>:staged <txid> <batch>``) and ``txid`` is recorded in
      ``self.state``, so the record of it commits (or rolls back) with the state;
    - at ``pre_commit(txid)``, and in ``init_state`` for the txid the committed state
      records (a restarted task gets COMMIT without ``pre_commit``), the staged batch is
      applied in one MULTI/EXEC that also sets ``<prefix>:applied`` to txid, only if that
      marker is below txid: applying twice writes nothing the second time;
    - ``pre_rollback`` and ``init_state`` drop the buffer and the staged batches that
      never committed.

    ``<prefix>`` is ``streamgale:sink:<topology>/<component>/<task>``. The marker compares
    checkpoint txids, so the topology needs a durable state backend (txids start again
    with a new memory backend: delete the marker then).
    """

    url: ClassVar[str | None] = None  # redis.url
    stream_key: ClassVar[str | None] = None  # redis.sink.stream
    hash_key: ClassVar[str | None] = None  # redis.sink.hash
    fields: ClassVar[Sequence[str] | None] = None
    key_field: ClassVar[str | None] = None
    value_field: ClassVar[str | None] = None
    socket_timeout: ClassVar[float] = 5.0

    def prepare(self, context: TopologyContext) -> None:
        config = context.config
        self._name = f"{context.component}[{context.task_id}]"
        url = _required_str(self, config, "redis.url", "url", "the server's URL")
        self._stream = _setting(self, config, "redis.sink.stream", "stream_key")
        self._hash = _setting(self, config, "redis.sink.hash", "hash_key")
        if bool(self._stream) == bool(self._hash):
            raise RedisConnectorError(f"{type(self).__name__} needs one target: a stream (config key "
                                      f"'redis.sink.stream' or class attribute 'stream_key') or a hash (config key "
                                      f"'redis.sink.hash' or class attribute 'hash_key'), got stream "
                                      f"{self._stream!r} and hash {self._hash!r}")
        if self._hash and not (self.key_field and self.value_field):
            raise RedisConnectorError(f"{type(self).__name__} writing hash {self._hash!r} needs the class "
                                      f"attributes 'key_field' and 'value_field'")
        prefix = f"streamgale:sink:{context.topology}/{context.component}/{context.task_id}"
        self._staged_key, self._marker = f"{prefix}:staged", f"{prefix}:applied"
        self._client = _client(url, self.socket_timeout)
        self._buffer: list[Any] = []
        self._staged: list[int] = []  # txids staged by this incarnation, not yet applied
        self.stats = {"buffered": 0, "staged_batches": 0, "applied_batches": 0, "applied_records": 0,
                      "already_applied": 0, "dropped_batches": 0}

    def _record(self, tup: Tuple) -> Any:
        if self._hash:
            return [str(tup[self.key_field]), _encode(tup[self.value_field])]  # type: ignore[index]
        return _tuple_fields(tup, self.fields)

    def process(self, tup: Tuple) -> None:
        self._buffer.append(self._record(tup))

    def pre_prepare(self, txid: int) -> None:
        if not self._buffer:
            return
        self._client.hset(self._staged_key, str(txid), msgpack.packb(self._buffer))
        self.state[TXID_KEY] = txid
        self._staged.append(txid)
        self.stats["staged_batches"] += 1
        self._buffer = []

    def pre_commit(self, txid: int) -> None:
        while self._staged and self._staged[0] <= txid:
            self._apply(self._staged[0])
            self._staged.pop(0)

    def pre_rollback(self) -> None:
        self._buffer = []
        staged, self._staged = self._staged, []
        if staged:
            try:
                self._client.hdel(self._staged_key, *[str(t) for t in staged])
            except redis.RedisError as exc:  # harmless: never applied (a new stage overwrites its txid)
                log.warning("%s: dropping rolled-back staged batches %s failed (%s)", self._name, staged, exc)
            self.stats["dropped_batches"] += len(staged)

    def init_state(self, state: Any) -> None:
        super().init_state(state)
        self._buffer, self._staged = [], []
        committed = state.get(TXID_KEY)
        if committed is not None:
            self._apply(int(committed))  # committed while this task was down: it missed pre_commit
        stale = [t for t in self._client.hkeys(self._staged_key) if committed is None or int(t) != int(committed)]
        if stale:  # staged above the committed txid: rolled back (or left by a crash before commit)
            self._client.hdel(self._staged_key, *stale)
            self.stats["dropped_batches"] += len(stale)

    def _apply(self, txid: int) -> None:
        """Write staged batch ``txid`` to the target and set the marker, once: one MULTI/EXEC."""
        with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self._marker)
                    marker = pipe.get(self._marker)
                    packed = pipe.hget(self._staged_key, str(txid))
                    if (marker is not None and int(marker) >= txid) or packed is None:
                        pipe.unwatch()
                        if packed is not None:
                            self._client.hdel(self._staged_key, str(txid))
                        self.stats["already_applied"] += 1
                        return
                    records = msgpack.unpackb(packed)
                    pipe.multi()
                    for record in records:
                        if self._hash:
                            pipe.hset(self._hash, record[0], record[1])
                        else:
                            pipe.xadd(self._stream, record)
                    pipe.set(self._marker, txid)
                    pipe.hdel(self._staged_key, str(txid))
                    pipe.execute()
                    self.stats["applied_batches"] += 1
                    self.stats["applied_records"] += len(records)
                    return
                except redis.WatchError:
                    continue

    def counters(self) -> dict[str, Any]:
        return {**self.stats, "buffered": len(self._buffer)}

    def cleanup(self) -> None:
        self._client.close()
