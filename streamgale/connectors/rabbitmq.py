"""RabbitMQ (AMQP 0-9-1) source and sink, on pika's ``BlockingConnection`` (docs/connectors.md).

:class:`RabbitMQSource` consumes a queue with manual acks and follows the source contract
(``streamgale.connectors.source``):

- **Consuming.** ``basic_consume`` once per connection; ``fetch`` runs
  ``process_data_events(time_limit=0)`` (reads what the socket already holds, never waits)
  and hands out what the consumer callback buffered. The broker pushes up to the prefetch
  window ahead, so a fetch costs no round trip (``basic_get`` would cost one per message).
- **Prefetch** (``basic_qos(prefetch_count=...)``) is ``prefetch`` capped by the spout's
  in-flight limit (``topology.max_spout_pending`` when acking is on): the broker never
  delivers more than the spout may hold.
- **Commit** is ``basic_ack(delivery_tag, multiple=False)`` once a tuple tree is acked.
- **Ids.** Delivery tags are per channel, so a message's id is ``(generation, tag)``, the
  generation counting this task's connections. After a reconnect the broker redelivers
  whatever was unacked (``redelivered`` set) under new ids; commits, nacks and dead letters
  for ids of an earlier generation are dropped, never sent on the new channel (where the tag
  would be unknown or, worse, another message's): the broker has those messages back
  already (at-least-once: such a message may be processed twice).
- **Fail.** With ``requeue=True`` (default) a failed message that carries a ``message_id``
  property is nacked with requeue (the contract's ``release``): the broker delivers it again,
  maybe to another consumer; this task remembers its attempts by ``message_id`` so
  ``max_retries`` still applies. A message without ``message_id`` (it could not be recognised
  when it comes back) and every message when ``requeue=False`` is replayed from this task
  with the base class's backoff (it stays unacked at the broker meanwhile). After
  ``max_retries`` failed attempts it is dead-lettered: ``basic_nack(requeue=False)``, which
  the broker routes to the queue's dead-letter exchange, when ``dead_letter_exchange`` or
  ``dead_letter_queue`` is set (the queue is declared with ``x-dead-letter-exchange`` /
  ``x-dead-letter-routing-key``; or set those by a broker policy and ``declare=False``);
  else the base default (logged and acked: dropped).
- **Fields.** ``body`` (``decode``: ``"auto"`` gives ``str`` for ``text/*`` content types,
  a decoded value for ``application/json``, ``bytes`` otherwise; or ``"bytes"``, ``"text"``,
  ``"json"`` for every message), plus ``routing_key`` when ``include_routing_key``. A body
  that cannot be decoded is dead-lettered at once (counted as ``undecodable``).
- **Lag** is the queue's ready count (a passive ``queue_declare``).
- ``url`` and ``queue`` default to the ``rabbitmq.url`` / ``rabbitmq.queue`` config keys.

:class:`RabbitMQSink` publishes each tuple's ``body`` (bytes as they are, ``str`` as UTF-8
``text/plain``, anything else as ``application/json``) with publisher confirms
(``confirm_delivery()``), ``delivery_mode=2`` (persistent), ``mandatory=True`` and a fresh
``message_id``; a batch is acked only once the broker confirmed every message of it, and
failed (replayed) if any publish was nacked, returned unroutable or lost with the connection.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from typing import Any, cast

import pika
import pika.exceptions
import pika.spec

from streamgale.components import TopologyContext
from streamgale.tuples import Tuple

from .sink import SinkBolt
from .source import Message, SourceSpout

log = logging.getLogger("streamgale.connectors")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
MAX_PREFETCH = 65535  # prefetch_count is a short
_DECODES = ("auto", "bytes", "text", "json")


def _parameters(url: str, heartbeat: int, socket_timeout: float) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.socket_timeout = socket_timeout
    params.blocked_connection_timeout = max(socket_timeout, 10.0)
    params.connection_attempts = 1
    return params


def _close(conn: pika.BlockingConnection | None) -> None:
    if conn is None:
        return
    try:
        if conn.is_open:
            conn.close()
    except Exception:  # noqa: BLE001 - best effort: the connection may be dead already
        pass


class RabbitMQSource(SourceSpout):
    """Consume ``queue`` with manual acks (see the module docstring for the guarantees)."""

    def __init__(self, queue: str | None = None, url: str | None = None, *, prefetch: int | None = None,
                 declare: bool = True, durable: bool = True, requeue: bool = True,
                 dead_letter_exchange: str | None = None, dead_letter_routing_key: str | None = None,
                 dead_letter_queue: str | None = None, decode: str = "auto", include_routing_key: bool = False,
                 max_retries: int | None = 5, heartbeat: int = 30, socket_timeout: float = 5.0):
        if decode not in _DECODES:
            raise ValueError(f"decode must be one of {', '.join(_DECODES)}, got {decode!r}")
        if prefetch is not None and not 1 <= prefetch <= MAX_PREFETCH:
            raise ValueError(f"prefetch must be 1..{MAX_PREFETCH} or None, got {prefetch!r}")
        self.queue = queue
        self.url = url
        self.prefetch = prefetch
        self.declare = declare
        self.durable = durable
        self.requeue = requeue
        if dead_letter_queue is not None and dead_letter_exchange is None:
            dead_letter_exchange = ""  # the default exchange routes by queue name
            dead_letter_routing_key = dead_letter_routing_key or dead_letter_queue
        self.dead_letter_exchange = dead_letter_exchange
        self.dead_letter_routing_key = dead_letter_routing_key
        self.dead_letter_queue = dead_letter_queue
        self.decode = decode
        self.include_routing_key = include_routing_key
        self.max_retries = max_retries
        self.heartbeat = heartbeat
        self.socket_timeout = socket_timeout
        self.outputs = ["body", "routing_key"] if include_routing_key else ["body"]  # type: ignore[misc]

    # -- life cycle ----------------------------------------------------------------------------

    def open(self, context: TopologyContext) -> None:
        self._url = self.url or str(context.config.get("rabbitmq.url") or DEFAULT_URL)
        queue = self.queue or context.config.get("rabbitmq.queue")
        if not queue:
            raise ValueError(f"{context.component}: RabbitMQSource needs a queue (argument or rabbitmq.queue)")
        self._queue = str(queue)
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._generation = 0
        self._buffer: deque[Message] = deque()
        self._attempts: OrderedDict[str, int] = OrderedDict()  # message_id -> failed attempts (requeue)
        self._message_ids: dict[Hashable, str] = {}  # pending id -> message_id, for release
        super().open(context)
        for key in ("stale_dropped", "undecodable", "requeued", "redelivered"):
            self.stats.setdefault(key, 0)

    def connect(self) -> None:
        conn = pika.BlockingConnection(_parameters(self._url, self.heartbeat, self.socket_timeout))
        try:
            channel = conn.channel()
            if self.declare:
                arguments: dict[str, Any] = {}
                if self.dead_letter_exchange is not None:
                    arguments["x-dead-letter-exchange"] = self.dead_letter_exchange
                    if self.dead_letter_routing_key is not None:
                        arguments["x-dead-letter-routing-key"] = self.dead_letter_routing_key
                if self.dead_letter_queue is not None:
                    channel.queue_declare(self.dead_letter_queue, durable=self.durable)
                channel.queue_declare(self._queue, durable=self.durable, arguments=arguments or None)
            else:
                channel.queue_declare(self._queue, passive=True)
            limit = self._limit if self.prefetch is None else min(self.prefetch, self._limit)
            channel.basic_qos(prefetch_count=max(1, min(limit, MAX_PREFETCH)))
            self._generation += 1
            self._buffer.clear()
            channel.basic_consume(self._queue, self._on_message, auto_ack=False)
        except BaseException:
            _close(conn)
            raise
        self._conn, self._channel = conn, channel

    def disconnect(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        self._buffer.clear()  # unacked at the broker: it delivers them again
        _close(conn)

    # -- consuming -----------------------------------------------------------------------------

    def _on_message(self, channel: Any, method: pika.spec.Basic.Deliver, properties: pika.spec.BasicProperties,
                    body: bytes) -> None:
        msg_id = (self._generation, method.delivery_tag)
        if method.redelivered:
            self.stats["redelivered"] += 1
        try:
            value = self._decode(properties, body)
        except (UnicodeDecodeError, ValueError) as exc:
            self.stats["undecodable"] += 1
            log.error("%s: message %r of queue %r cannot be decoded as %s (%s); dead-lettered", self._name,
                      msg_id, self._queue, self.decode, exc)
            self._dead_letter_tag(method.delivery_tag)
            return
        values = [value, method.routing_key] if self.include_routing_key else [value]
        message = Message(msg_id, values)
        if properties.message_id:
            message.attempts = self._attempts.pop(properties.message_id, 0)
            self._message_ids[msg_id] = properties.message_id
        self._buffer.append(message)

    def _decode(self, properties: pika.spec.BasicProperties, body: bytes) -> Any:
        mode = self.decode
        if mode == "auto":
            ctype = (properties.content_type or "").lower()
            mode = "json" if ctype == "application/json" else "text" if ctype.startswith("text/") else "bytes"
        if mode == "bytes":
            return body
        text = body.decode(properties.content_encoding or "utf-8") if mode == "text" else body.decode("utf-8")
        return text if mode == "text" else json.loads(text)

    def fetch(self, limit: int) -> Sequence[Message]:
        if self._conn is None or self._channel is None or not self._channel.is_open:
            raise pika.exceptions.ChannelWrongStateError("the channel is closed")
        if len(self._buffer) < limit:
            self._conn.process_data_events(time_limit=0)
        out: list[Message] = []
        while self._buffer and len(out) < limit:
            out.append(self._buffer.popleft())
        return out

    # -- the broker side of the contract -------------------------------------------------------

    def _current(self, msg_id: Hashable) -> int | None:
        """The delivery tag of ``msg_id`` if it belongs to the live channel, else None (dropped)."""
        self._message_ids.pop(msg_id, None)
        generation, tag = cast("tuple[int, int]", msg_id)
        if generation != self._generation or self._channel is None:
            self.stats["stale_dropped"] += 1
            return None
        return tag

    def commit(self, ids: list[Hashable]) -> None:
        channel = self._channel
        for msg_id in ids:
            tag = self._current(msg_id)
            if tag is not None:
                channel.basic_ack(delivery_tag=tag, multiple=False)

    def release(self, message: Message) -> bool:
        if cast("tuple[int, int]", message.id)[0] != self._generation:
            self.stats["stale_dropped"] += 1
            self._message_ids.pop(message.id, None)
            return True  # its channel is gone: the broker has it back already
        if not self.requeue:
            return False
        message_id = self._message_ids.get(message.id)
        if message_id is None:
            return False  # it could not be recognised when it comes back: replay it from here
        tag = self._current(message.id)
        if tag is not None:
            self._channel.basic_nack(delivery_tag=tag, multiple=False, requeue=True)
            self._attempts[message_id] = message.attempts
            while len(self._attempts) > 100_000:
                self._attempts.popitem(last=False)
            self.stats["requeued"] += 1
        return True  # done either way: a stale one is back at the broker already

    def dead_letter(self, message: Message, reason: str) -> None:
        if self.dead_letter_exchange is None:
            super().dead_letter(message, reason)
            return
        tag = self._current(message.id)
        log.warning("%s: message %r failed %d times (%s); dead-lettered to exchange %r", self._name, message.id,
                    message.attempts, reason, self.dead_letter_exchange)
        if tag is not None:
            self._channel.basic_nack(delivery_tag=tag, multiple=False, requeue=False)

    def _dead_letter_tag(self, tag: int) -> None:
        if self.dead_letter_exchange is None:
            self._channel.basic_ack(delivery_tag=tag, multiple=False)
        else:
            self._channel.basic_nack(delivery_tag=tag, multiple=False, requeue=False)

    def ack(self, msg_id: Any) -> None:
        super().ack(msg_id)
        self._message_ids.pop(msg_id, None)

    def lag(self) -> int | None:
        if self._channel is None or not self._channel.is_open:
            return None
        return int(self._channel.queue_declare(self._queue, passive=True).method.message_count)


class RabbitMQSink(SinkBolt):
    """Publish each tuple's ``field`` to ``exchange`` with publisher confirms (persistent)."""

    def __init__(self, routing_key: str | None = None, exchange: str = "", url: str | None = None, *,
                 field: str = "body", routing_key_field: str | None = None, declare_queue: str | None = None,
                 durable: bool = True, persistent: bool = True, mandatory: bool = True, heartbeat: int = 30,
                 socket_timeout: float = 5.0):
        self.routing_key = routing_key
        self.exchange = exchange
        self.url = url
        self.field = field
        self.routing_key_field = routing_key_field
        self.declare_queue = declare_queue
        self.durable = durable
        self.persistent = persistent
        self.mandatory = mandatory
        self.heartbeat = heartbeat
        self.socket_timeout = socket_timeout

    def prepare(self, context: TopologyContext) -> None:
        super().prepare(context)
        self._url = self.url or str(context.config.get("rabbitmq.url") or DEFAULT_URL)
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self.stats.setdefault("confirmed", 0)

    def connect(self) -> None:
        conn = pika.BlockingConnection(_parameters(self._url, self.heartbeat, self.socket_timeout))
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            if self.declare_queue:
                channel.queue_declare(self.declare_queue, durable=self.durable)
        except BaseException:
            _close(conn)
            raise
        self._conn, self._channel = conn, channel

    def disconnect(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        _close(conn)

    @staticmethod
    def _encode(value: Any) -> tuple[bytes, str | None]:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value), None
        if isinstance(value, str):
            return value.encode("utf-8"), "text/plain"
        return json.dumps(value, separators=(",", ":")).encode("utf-8"), "application/json"

    def write(self, tuples: list[Tuple]) -> None:
        channel = self._channel
        if channel is None:
            raise pika.exceptions.ChannelWrongStateError("not connected")
        for tup in tuples:
            body, ctype = self._encode(tup[self.field])
            key = str(tup[self.routing_key_field]) if self.routing_key_field else self.routing_key
            if key is None:
                raise ValueError("RabbitMQSink needs routing_key or routing_key_field")
            props = pika.BasicProperties(delivery_mode=2 if self.persistent else 1, content_type=ctype,
                                         message_id=uuid.uuid4().hex)
            # In confirm mode a BlockingChannel publish returns once the broker confirmed it and
            # raises NackError / UnroutableError (mandatory) otherwise: the batch then fails.
            channel.basic_publish(self.exchange, key, body, props, mandatory=self.mandatory)
            self.stats["confirmed"] += 1
