"""The MQTT connector (docs/connectors.md) against a real mosquitto broker, in local mode.

The source sends a message's PUBACK only once its tuple tree is acked (unacked ones come back
on the session's next connection), replays failed ones, survives a broker restart (the
persistent session and its queued messages are saved by the broker), and splits a topic over
tasks with a shared subscription; the sink's messages reach a subscriber.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streamgale import Bolt, Config, LocalCluster, Topology
from streamgale.connectors.mqtt import MqttSink, MqttSource
from streamgale.dev.polling import poll_until
from streamgale.reliable import ReliableSpout

N = 200


class Client:
    """A test-side paho client: publishes at QoS 1 (waiting for each PUBACK), records what it gets."""

    def __init__(self, server, client_id: str = "", persistent: bool = False):
        self.received: queue.SimpleQueue[mqtt.MQTTMessage] = queue.SimpleQueue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                  reconnect_on_failure=False)
        self.client.on_message = lambda c, u, m: self.received.put(m)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = 3600
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: connected.set()
        self.client.connect(server.host, server.port, 30, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert connected.wait(5), "no CONNACK"

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5), "no SUBACK"

    def publish(self, topic: str, payloads, qos: int = 1) -> None:
        infos = [self.client.publish(topic, p, qos=qos) for p in payloads]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()

    def take(self, count: int, timeout: float = 10) -> list[mqtt.MQTTMessage]:
        out: list[mqtt.MQTTMessage] = []

        def got_them():
            while True:
                try:
                    out.append(self.received.get_nowait())
                except queue.Empty:
                    return len(out) >= count

        poll_until(got_them, timeout, f"{count} MQTT messages (got {len(out)})")
        return out

    def collect(self, done: Callable[[list[mqtt.MQTTMessage]], bool], timeout: float = 10) -> list[mqtt.MQTTMessage]:
        out: list[mqtt.MQTTMessage] = []

        def got_them():
            while True:
                try:
                    out.append(self.received.get_nowait())
                except queue.Empty:
                    return done(out)

        poll_until(got_them, timeout, f"MQTT messages (got {len(out)})")
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(mosquitto):
    mosquitto.start()  # no-op unless an earlier test left it down
    made: list[Client] = []

    def make(**kwargs) -> Client:
        c = Client(mosquitto, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Record(Bolt):
    """Records every (task, payload) it processes; fails the first attempt of payloads in ``fail_once``."""

    outputs = ["payload"]
    auto_ack = False
    seen: list[str] = []
    fail_once: set[str] = set()
    failed: set[str] = set()

    def process(self, tup):
        payload = tup["payload"]
        if payload in Record.fail_once and payload not in Record.failed:
            Record.failed.add(payload)
            self.fail(tup)
            return
        Record.seen.append(payload)
        self.ack(tup)


@pytest.fixture(autouse=True)
def fresh_record():
    Record.seen, Record.fail_once, Record.failed = [], set(), set()
    yield


def source_topology(name: str, source: MqttSource, parallelism: int = 1) -> Topology:
    t = Topology(name)
    t.spout("mqtt", source, parallelism=parallelism)
    t.bolt("record", Record, parallelism=2).shuffle("mqtt")
    return t


def config(**settings) -> Config:
    return Config().merged({"topology.message_timeout": 10, **settings}, "test")


def spouts_of(cluster: LocalCluster) -> list[MqttSource]:
    return [r.instance for e in cluster.loop.spouts for r in e.runners if isinstance(r.instance, MqttSource)]


def run(cluster: LocalCluster, until: Callable[[], Any], timeout: float = 30) -> None:
    result = cluster.run(duration=timeout, until=until)
    assert not result.errors, result.errors


def all_processed(cluster: LocalCluster, expected: set[str]) -> Callable[[], bool]:
    def done() -> bool:
        spouts = spouts_of(cluster)
        return (expected <= set(Record.seen) and all(s.counters()["pending"] == 0 for s in spouts)
                and not any(s._to_commit for s in spouts))
    return done


# -- the source ----------------------------------------------------------------------------------


def test_every_qos1_message_is_processed_acked_and_acknowledged_to_the_broker(mosquitto, clients):
    topic, name = unique("sg/a/"), unique("mqtta")
    payloads = [f"m{i}" for i in range(N)]
    cluster = LocalCluster(source_topology(name, MqttSource(topic, mosquitto.host, mosquitto.port,
                                                            payload_format="text")), config())
    publisher = clients()
    published = []

    def until() -> bool:
        [spout] = spouts_of(cluster)
        if not published and spout.counters()["connected"]:
            publisher.publish(topic, payloads)  # subscribed: the session exists
            published.append(True)
        return bool(published) and all_processed(cluster, set(payloads))()

    run(cluster, until)
    assert sorted(Record.seen) == sorted(payloads)  # exactly once each: nothing failed
    [spout] = spouts_of(cluster)
    counters = spout.counters()
    assert counters["fetched"] == N and counters["committed"] == N and counters["connection_lost"] == 0
    # Every PUBACK reached the broker: resuming the session, the first message is a new one, not
    # an unacknowledged one sent again. (Resume only once the broker read all the closed spout sent:
    # a client taking the session over first would make the broker drop that connection's last bytes.)
    client_id = f"{name}-mqtt-0"
    poll_until(lambda: mosquitto.disconnected(client_id), 10, f"the broker to see {client_id} disconnect")
    resumed = clients(client_id=client_id, persistent=True)
    publisher.publish(topic, ["marker"])
    [first] = resumed.take(1)
    assert first.payload == b"marker" and not first.dup


def test_messages_whose_tuples_are_not_acked_are_sent_again_on_the_next_connection(mosquitto, clients):
    class Hold(Bolt):
        outputs = ["payload"]
        auto_ack = False
        held: list[Any] = []

        def process(self, tup):
            Hold.held.append(tup["payload"])  # neither acked nor failed

    topic, name = unique("sg/h/"), unique("mqtth")
    t = Topology(name)
    t.spout("mqtt", MqttSource(topic, mosquitto.host, mosquitto.port))
    t.bolt("hold", Hold).shuffle("mqtt")
    cluster = LocalCluster(t, config())
    publisher = clients()
    payloads = [f"h{i}".encode() for i in range(10)]
    published = []

    def until() -> bool:
        [spout] = spouts_of(cluster)
        if not published and spout.counters()["connected"]:
            publisher.publish(topic, payloads)
            published.append(True)
        return len(Hold.held) == len(payloads)

    run(cluster, until)
    assert sorted(Hold.held) == sorted(payloads)  # bytes by default
    # No PUBACK was sent: the broker sends them all again, flagged DUP, to the session.
    client_id = f"{name}-mqtt-0"
    poll_until(lambda: mosquitto.disconnected(client_id), 10, f"the broker to see {client_id} disconnect")
    resumed = clients(client_id=client_id, persistent=True)
    again = resumed.take(len(payloads))
    assert sorted(m.payload for m in again) == sorted(payloads) and all(m.dup for m in again)


def test_failed_tuples_are_replayed_until_every_message_is_processed(mosquitto, clients):
    topic, name = unique("sg/f/"), unique("mqttf")
    payloads = [f"m{i}" for i in range(N)]
    Record.fail_once = {p for i, p in enumerate(payloads) if i % 7 == 0}
    cluster = LocalCluster(source_topology(name, MqttSource(topic, mosquitto.host, mosquitto.port,
                                                            payload_format="text")), config())
    publisher = clients()
    published = []

    def until() -> bool:
        [spout] = spouts_of(cluster)
        if not published and spout.counters()["connected"]:
            publisher.publish(topic, payloads)
            published.append(True)
        return bool(published) and all_processed(cluster, set(payloads))()

    run(cluster, until)
    assert Record.failed == Record.fail_once
    assert sorted(Record.seen) == sorted(payloads)
    [spout] = spouts_of(cluster)
    counters = spout.counters()
    assert counters["retried"] == len(Record.fail_once)
    assert counters["committed"] == N and counters["pending"] == 0


def test_the_source_survives_a_broker_restart(mosquitto, clients):
    topic, name = unique("sg/r/"), unique("mqttr")
    before = [f"b{i}" for i in range(N // 2)]
    after = [f"a{i}" for i in range(N // 2)]
    source = MqttSource(topic, mosquitto.host, mosquitto.port, payload_format="text")
    cluster = LocalCluster(source_topology(name, source), config())
    steps: list[str] = []
    publisher: list[Client] = []

    def until() -> bool:
        [spout] = spouts_of(cluster)
        counters = spout.counters()
        if not steps and counters["connected"]:
            publisher.append(clients())
            publisher[-1].publish(topic, before)
            steps.append("published before")
        elif steps == ["published before"] and set(before) <= set(Record.seen):
            mosquitto.stop()  # an orderly stop: the broker saves the session
            steps.append("stopped")
        elif steps[-1:] == ["stopped"] and counters["connection_lost"] >= 1:
            mosquitto.start()  # same port
            publisher.append(clients())
            publisher[-1].publish(topic, after)  # queued for the session if it has not reconnected yet
            steps.append("restarted")
        return steps[-1:] == ["restarted"] and all_processed(cluster, set(before) | set(after))()

    try:
        run(cluster, until, timeout=60)
    finally:
        mosquitto.start()
    assert set(Record.seen) == set(before) | set(after)  # at-least-once: a duplicate is allowed
    [spout] = spouts_of(cluster)
    counters = spout.counters()
    assert counters["connection_lost"] >= 1 and counters["reconnects"] >= 1 and counters["connected"]


def test_tasks_share_a_topic_through_a_shared_subscription(mosquitto, clients):
    topic, name = unique("sg/s/"), unique("mqtts")
    payloads = [f"m{i}" for i in range(N)]
    cluster = LocalCluster(source_topology(name, MqttSource(topic, mosquitto.host, mosquitto.port,
                                                            payload_format="text"), parallelism=2), config())
    publisher = clients()
    published = []

    def until() -> bool:
        spouts = spouts_of(cluster)
        if not published and all(s.counters()["connected"] for s in spouts):
            publisher.publish(topic, payloads)
            published.append(True)
        return bool(published) and all_processed(cluster, set(payloads))()

    run(cluster, until)
    assert sorted(Record.seen) == sorted(payloads)  # each message to one task only
    fetched = [s.counters()["fetched"] for s in spouts_of(cluster)]
    assert sum(fetched) == N and all(f > 0 for f in fetched), fetched


def test_json_payloads_are_decoded_and_malformed_ones_dropped(mosquitto, clients):
    topic, name = unique("sg/j/"), unique("mqttj")
    cluster = LocalCluster(source_topology(name, MqttSource(topic, mosquitto.host, mosquitto.port,
                                                            payload_format="json")), config())
    publisher = clients()
    published = []

    def until() -> bool:
        [spout] = spouts_of(cluster)
        if not published and spout.counters()["connected"]:
            publisher.publish(topic, ['"one"', "not json", '"two"'])
            published.append(True)
        return bool(published) and all_processed(cluster, {"one", "two"})()

    run(cluster, until)
    [spout] = spouts_of(cluster)
    assert sorted(Record.seen) == ["one", "two"] and spout.counters()["malformed"] == 1


def test_mqtt_3_1_1_with_a_persistent_session_works_too(mosquitto, clients):
    topic, name = unique("sg/v3/"), unique("mqttv")
    payloads = [f"m{i}" for i in range(50)]
    Record.fail_once = {"m3", "m30"}
    cluster = LocalCluster(source_topology(name, MqttSource(topic, mosquitto.host, mosquitto.port, protocol="3.1.1",
                                                            payload_format="text")), config())
    publisher = clients()
    published = []

    def until() -> bool:
        [spout] = spouts_of(cluster)
        if not published and spout.counters()["connected"]:
            publisher.publish(topic, payloads)
            published.append(True)
        return bool(published) and all_processed(cluster, set(payloads))()

    run(cluster, until)
    assert sorted(Record.seen) == sorted(payloads)
    [spout] = spouts_of(cluster)
    assert spout.counters()["committed"] == len(payloads) and spout.counters()["retried"] == 2


def test_bad_settings_are_refused_naming_the_choices():
    with pytest.raises(ValueError, match="payload_format"):
        MqttSource("t", payload_format="xml")
    with pytest.raises(ValueError, match="protocol"):
        MqttSink(protocol="4")
    with pytest.raises(ValueError, match="topic filter"):
        MqttSource([])


# -- the sink ------------------------------------------------------------------------------------


class Numbers(ReliableSpout):
    outputs = ["topic", "payload"]
    base = ""

    def open(self, context):
        self.todo = [(i, [f"{Numbers.base}/{i % 3}", {"n": i}]) for i in range(N)]
        self.todo.reverse()

    def next_message(self):
        return self.todo.pop() if self.todo else None


def test_the_sinks_messages_arrive_at_a_subscriber(mosquitto, clients):
    Numbers.base = unique("sg/out/")
    subscriber = clients()
    subscriber.subscribe(f"{Numbers.base}/#")
    t = Topology(unique("mqttk"))
    t.spout("numbers", Numbers)
    t.bolt("sink", MqttSink(mosquitto.host, mosquitto.port)).shuffle("numbers")
    cluster = LocalCluster(t, config())
    [spout] = [r.instance for e in cluster.loop.spouts for r in e.runners]
    run(cluster, lambda: getattr(spout, "acked", 0) == N)
    got = subscriber.take(N)
    assert sorted((m.topic, m.payload) for m in got) == sorted(
        (f"{Numbers.base}/{i % 3}", f'{{"n":{i}}}'.encode()) for i in range(N))
    [sink] = [r.instance for e in cluster.loop.bolts for r in e.runners if isinstance(r.instance, MqttSink)]
    assert sink.counters()["written"] == N and sink.counters()["failed_batches"] == 0


def test_the_sink_fails_its_batch_while_the_broker_is_down_and_the_spout_replays_it(mosquitto, clients):
    Numbers.base = unique("sg/down/")
    # A persistent subscriber session, offline: the broker queues what the sink publishes for it.
    subscriber_id = unique("sub")
    subscriber = clients(client_id=subscriber_id, persistent=True)
    subscriber.subscribe(f"{Numbers.base}/all")
    subscriber.close()
    t = Topology(unique("mqttd"))
    t.spout("numbers", Numbers)
    t.bolt("sink", MqttSink(mosquitto.host, mosquitto.port, topic=f"{Numbers.base}/all")).shuffle("numbers")
    cluster = LocalCluster(t, config())
    [spout] = [r.instance for e in cluster.loop.spouts for r in e.runners]
    mosquitto.stop()
    started: list[bool] = []

    def until() -> bool:
        [sink] = [r.instance for e in cluster.loop.bolts for r in e.runners if isinstance(r.instance, MqttSink)]
        if not started and sink.counters()["failed_batches"] >= 1:
            mosquitto.start()
            started.append(True)
        return bool(started) and getattr(spout, "acked", 0) == N

    try:
        run(cluster, until, timeout=60)
    finally:
        mosquitto.start()
    assert spout.replayed > 0
    [sink] = [r.instance for e in cluster.loop.bolts for r in e.runners if isinstance(r.instance, MqttSink)]
    assert sink.counters()["failed_batches"] >= 1 and sink.counters()["connected"]
    resumed = clients(client_id=subscriber_id, persistent=True)
    expected = {f'{{"n":{i}}}'.encode() for i in range(N)}
    got = resumed.collect(lambda msgs: expected <= {m.payload for m in msgs})
    assert {m.payload for m in got} == expected  # at-least-once: duplicates allowed
