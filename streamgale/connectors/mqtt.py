"""MQTT: a QoS 1 source that sends PUBACK only once a message's tuple tree is acked, and a sink.

:class:`MqttSource` subscribes at QoS 1 with a **persistent session** (MQTT v5 session expiry,
or ``clean_session=False`` with 3.1.1) under a client id stable per task
(``<topology>-<component>-<task_index>``, or ``<client_id>-<task_index>``), and with
paho's ``manual_ack``: the PUBACK of a message goes to the broker in :meth:`commit`, that is
only after its tuple tree was acked. Until then the broker holds the message as in flight
for this session and sends it again, with the DUP flag, on the session's next connection.

- Tuples: ``topic`` (str) and ``payload``: ``bytes`` by default, ``payload_format="text"``
  (UTF-8) or ``"json"`` to decode; a payload that does not decode is logged, counted as
  ``malformed`` and acknowledged (dropped).
- Message ids are ``(connection, mid)``: the broker's packet id is only unique within a
  connection. A message in flight when the connection drops is sent again by the broker
  on the next connection under a new id, and the old one is never acknowledged (its
  commit is skipped, counted as ``stale``; its local replay is handed back to the broker
  through ``release``): **at-least-once**, a message may be processed twice.
- paho runs the network in its own thread (``loop_start``); messages reach the spout
  through a thread-safe queue that ``fetch`` drains without blocking. A disconnect that
  paho reports (``on_disconnect``) makes the next ``fetch``/``commit`` raise, which the
  source contract turns into ``connection_lost`` and a reconnect with backoff (paho's own
  reconnect is off: each connection is a fresh client).
- Flow control: MQTT v5's Receive Maximum is the spout's in-flight limit (``max_spout_pending``),
  so the broker never sends more unacknowledged messages than the spout may hold.
- Several tasks share the work through an MQTT v5 **shared subscription**
  ``$share/<group>/<filter>`` (group ``<topology>-<component>`` by default; ``shared=True``
  forces it with one task): the broker hands each message to one task. A message in flight
  at a task that goes away stays with that task's session until it comes back or the
  session expires (``session_expiry``).

Ordering: MQTT asks clients to acknowledge in the order received; acknowledging after
processing acknowledges in completion order, which mosquitto accepts (it tracks in-flight
messages by id).

:class:`MqttSink` publishes each tuple at QoS 1 and acks the batch only once every PUBACK
arrived (within ``publish_timeout``; otherwise the batch is failed for replay).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import re
import threading
from collections.abc import Hashable, Sequence
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from streamgale.components import TopologyContext
from streamgale.tuples import Tuple

from .sink import SinkBolt
from .source import Message, SourceSpout

log = logging.getLogger("streamgale.connectors.mqtt")

PAYLOAD_FORMATS = ("bytes", "text", "json")
PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}


def _protocol(version: str) -> MQTTProtocolVersion:
    try:
        return PROTOCOLS[version]
    except KeyError:
        raise ValueError(f"MQTT protocol must be one of {sorted(PROTOCOLS)}, got {version!r}") from None


def _safe_name(name: str) -> str:
    """A client id / share group name part: no MQTT wildcards, separators or spaces."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


class _Connection:
    """One paho client and what its network thread reports (a fresh one per connection)."""

    def __init__(self, number: int, client: mqtt.Client):
        self.number = number
        self.client = client
        self.messages: queue.SimpleQueue[mqtt.MQTTMessage] = queue.SimpleQueue()
        self.connack = threading.Event()
        self.connect_error: str | None = None
        self.suback = threading.Event()
        self.subscribe_error: str | None = None
        self.lost: str | None = None  # set by the network thread on a disconnect
        self.publish_failures: dict[int, str] = {}

    # paho callbacks (CallbackAPIVersion.VERSION2), run in paho's network thread

    def on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.connect_error = str(reason)
        self.connack.set()

    def on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self.subscribe_error = ", ".join(failed)
        self.suback.set()

    def on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.publish_failures[mid] = str(reason)

    def on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.lost = str(reason) or "disconnected"
        self.connack.set()  # wake a connect() waiting for a CONNACK that will not come
        self.suback.set()

    def check(self) -> None:
        if self.lost is not None:
            raise ConnectionError(f"MQTT connection lost: {self.lost}")

    def wait(self, event: threading.Event, timeout: float, what: str) -> None:
        if not event.wait(timeout):
            raise TimeoutError(f"no {what} from the MQTT broker within {timeout} s")
        self.check()

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def _open(number: int, client_id: str, host: str, port: int, protocol: MQTTProtocolVersion, keepalive: int,
          timeout: float, persistent: bool, session_expiry: int, receive_maximum: int | None, manual_ack: bool,
          username: str | None, password: str | None) -> _Connection:
    """Connect a fresh paho client, start its network thread, and wait for the CONNACK."""
    kwargs: dict[str, Any] = {}
    if protocol != mqtt.MQTTv5:
        kwargs["clean_session"] = not persistent
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                         manual_ack=manual_ack, reconnect_on_failure=False, **kwargs)
    conn = _Connection(number, client)
    client.on_connect = conn.on_connect
    client.on_subscribe = conn.on_subscribe
    client.on_message = conn.on_message
    client.on_publish = conn.on_publish
    client.on_disconnect = conn.on_disconnect
    client.connect_timeout = timeout
    if username is not None:
        client.username_pw_set(username, password)
    connect_kwargs: dict[str, Any] = {}
    if protocol == mqtt.MQTTv5:
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = session_expiry
        if receive_maximum:
            props.ReceiveMaximum = max(1, min(receive_maximum, 65535))
        connect_kwargs = {"clean_start": not persistent, "properties": props}
    client.connect(host, port, keepalive, **connect_kwargs)  # the TCP connect: raises if refused
    client.loop_start()
    try:
        conn.wait(conn.connack, timeout, "CONNACK")
        if conn.connect_error is not None:
            raise ConnectionError(f"MQTT broker refused the connection: {conn.connect_error}")
    except BaseException:
        conn.close()
        raise
    return conn


def _split(msg_id: Hashable) -> tuple[int, int]:
    """A source message id: (connection number, packet id; negative for QoS 0 messages)."""
    number, mid = cast("tuple[int, int]", msg_id)
    return number, mid


class MqttSource(SourceSpout):
    """A QoS 1 subscription whose PUBACKs wait for the tuple trees (see the module docstring).

    ``topics``: one topic filter or several (``+``/``#`` wildcards allowed). Fields: ``topic``,
    ``payload``.
    """

    outputs = ["topic", "payload"]

    def __init__(self, topics: str | Sequence[str], host: str = "127.0.0.1", port: int = 1883, *,
                 payload_format: str = "bytes", client_id: str | None = None, shared: bool | None = None,
                 group: str | None = None, protocol: str = "5", session_expiry: int = 86400,
                 keepalive: int = 30, connect_timeout: float = 5.0, username: str | None = None,
                 password: str | None = None):
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics:
            raise ValueError("MqttSource needs at least one topic filter")
        if payload_format not in PAYLOAD_FORMATS:
            raise ValueError(f"payload_format must be one of {PAYLOAD_FORMATS}, got {payload_format!r}")
        self.protocol = _protocol(protocol)
        self.host, self.port = host, port
        self.payload_format = payload_format
        self.client_id = client_id
        self.shared = shared
        self.group = group
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.username, self.password = username, password

    # -- the broker side -----------------------------------------------------------------------

    def open(self, context: TopologyContext) -> None:
        base = self.client_id or f"{context.topology}-{context.component}"
        self._client_id = _safe_name(f"{base}-{context.task_index}")
        shared = context.task_count > 1 if self.shared is None else self.shared
        group = _safe_name(self.group or f"{context.topology}-{context.component}")
        self._filters = [f"$share/{group}/{t}" if shared else t for t in self.topics]
        self._conn: _Connection | None = None
        self._numbers = itertools.count(1)
        self._qos0 = itertools.count(1)
        super().open(context)
        self.stats.update({"redelivered": 0, "stale": 0, "malformed": 0})

    def connect(self) -> None:
        conn = _open(next(self._numbers), self._client_id, self.host, self.port, self.protocol, self.keepalive,
                     self.connect_timeout, True, self.session_expiry, self._limit, True, self.username,
                     self.password)
        try:
            if self.protocol == mqtt.MQTTv5:
                subs: list[Any] = [(f, SubscribeOptions(qos=1)) for f in self._filters]
            else:
                subs = [(f, 1) for f in self._filters]
            rc, _ = conn.client.subscribe(subs)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"MQTT subscribe failed: {mqtt.error_string(rc)}")
            conn.wait(conn.suback, self.connect_timeout, "SUBACK")
            if conn.subscribe_error is not None:
                raise ConnectionError(f"MQTT broker refused the subscription to {self._filters}: "
                                      f"{conn.subscribe_error}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def fetch(self, limit: int) -> Sequence[Message]:
        conn = self._connection()
        out: list[Message] = []
        while len(out) < limit:
            try:
                m = conn.messages.get_nowait()
            except queue.Empty:
                break
            if m.dup:
                self.stats["redelivered"] += 1
            try:
                payload = self._decode(m.payload)
            except ValueError as exc:
                self.stats["malformed"] += 1
                log.error("%s: message on %r does not decode as %s (%s); dropped (acknowledged)", self._name,
                          m.topic, self.payload_format, exc)
                if m.qos > 0:
                    conn.client.ack(m.mid, m.qos)
                continue
            # QoS 0 messages (published at QoS 0) carry no packet id and need no acknowledgement.
            mid = m.mid if m.qos > 0 else -next(self._qos0)
            out.append(Message((conn.number, mid), [m.topic, payload]))
        return out

    def commit(self, ids: list[Hashable]) -> None:
        conn = self._connection()
        for msg_id in ids:
            number, mid = _split(msg_id)
            if number != conn.number:
                self.stats["stale"] += 1  # delivered on an earlier connection: the broker sent it again
                continue
            if mid <= 0:
                continue
            rc = conn.client.ack(mid, 1)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"MQTT PUBACK failed: {mqtt.error_string(rc)}")
        conn.check()

    def release(self, message: Message) -> bool:
        # A failed message of an earlier connection: the broker delivers it again on this one.
        number, mid = _split(message.id)
        return self._conn is not None and number != self._conn.number and mid > 0

    def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- helpers --------------------------------------------------------------------------------

    def _connection(self) -> _Connection:
        conn = self._conn
        if conn is None:
            raise ConnectionError("not connected to the MQTT broker")
        conn.check()
        return conn

    def _decode(self, payload: bytes | bytearray) -> Any:
        if self.payload_format == "bytes":
            return bytes(payload)
        text = payload.decode("utf-8")  # UnicodeDecodeError is a ValueError
        return text if self.payload_format == "text" else json.loads(text)


class MqttSink(SinkBolt):
    """Publishes each tuple at QoS 1; a batch is acked once every PUBACK arrived.

    The topic is ``topic`` if given, else the tuple's ``topic_field``; the payload is the tuple's
    ``payload_field``: bytes and str as they are, anything else as JSON. ``retain`` sets the
    retain flag. A batch whose PUBACKs do not all arrive within ``publish_timeout`` seconds, or
    that the broker refuses (an MQTT v5 PUBACK reason code), is failed for replay
    (at-least-once: a message may be published twice).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, topic: str | None = None,
                 topic_field: str = "topic", payload_field: str = "payload", retain: bool = False,
                 client_id: str | None = None, protocol: str = "5", publish_timeout: float = 10.0,
                 keepalive: int = 30, connect_timeout: float = 5.0, username: str | None = None,
                 password: str | None = None):
        self.host, self.port = host, port
        self.topic = topic
        self.topic_field = topic_field
        self.payload_field = payload_field
        self.retain = retain
        self.client_id = client_id
        self.protocol = _protocol(protocol)
        self.publish_timeout = publish_timeout
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.username, self.password = username, password

    def prepare(self, context: TopologyContext) -> None:
        super().prepare(context)
        base = self.client_id or f"{context.topology}-{context.component}"
        self._client_id = _safe_name(f"{base}-{context.task_index}")
        self._conn: _Connection | None = None
        self._numbers = itertools.count(1)

    def connect(self) -> None:
        self._conn = _open(next(self._numbers), self._client_id, self.host, self.port, self.protocol,
                           self.keepalive, self.connect_timeout, False, 0, None, False, self.username,
                           self.password)

    def write(self, tuples: list[Tuple]) -> None:
        conn = self._conn
        if conn is None:
            raise ConnectionError("not connected to the MQTT broker")
        conn.check()
        infos = []
        for tup in tuples:
            topic = self.topic if self.topic is not None else tup[self.topic_field]
            infos.append(conn.client.publish(topic, self._encode(tup[self.payload_field]), qos=1,
                                             retain=self.retain))
        deadline = self.clock() + self.publish_timeout
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - self.clock()))  # raises if it could not be sent
            if not info.is_published():
                conn.check()
                raise TimeoutError(f"no PUBACK within {self.publish_timeout} s for {len(infos)} messages")
        failed = [conn.publish_failures.pop(info.mid) for info in infos if info.mid in conn.publish_failures]
        if failed:
            raise ConnectionError(f"the MQTT broker refused {len(failed)} of {len(infos)} messages: {failed[0]}")

    def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @staticmethod
    def _encode(payload: Any) -> bytes | str:
        if isinstance(payload, (bytes, str)):
            return payload
        if isinstance(payload, (bytearray, memoryview)):
            return bytes(payload)
        return json.dumps(payload, separators=(",", ":"))
