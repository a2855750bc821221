"""Connectors on real worker processes through a broker outage (docs/connectors.md).

MQTT: QoS 1 messages published before and after a broker restart all reach a topology on a
2-supervisor cluster. Redis Streams: the server (also the state backend) down for 10 s
mid-run; the topology survives, every entry is processed and written exactly once by the
checkpoint-committed sink, and the group's pending list ends empty.
"""

from __future__ import annotations

import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT

pytestmark = pytest.mark.slow

MQTT_TOPOLOGY = str(ROOT / "tests" / "topologies" / "mqtt_pipeline.py")


def recorded(out) -> list[str]:
    return [line for f in out.glob("record-*.txt") for line in f.read_text().splitlines() if line]


def publish(port: int, topic: str, payloads: list[str]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for p in payloads:
            info = client.publish(topic, p, qos=1)
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def test_mqtt_qos1_messages_all_reach_a_cluster_through_a_broker_restart(cluster, mosquitto, tmp_path):
    mosquitto.start()
    out = tmp_path / "out"
    topic = f"sensors-{uuid.uuid4().hex[:8]}"
    result = cluster.cli("submit", MQTT_TOPOLOGY, "-c", f"test.output_dir={out}", "-c", f"test.topic={topic}",
                         "-c", f"test.mqtt_port={mosquitto.port}")
    assert result.returncode == 0, result.stderr + cluster.logs()
    first = [f"a{i}" for i in range(300)]
    second = [f"b{i}" for i in range(300)]

    # The spout's persistent session exists once it has subscribed: until then a publish is lost.
    def subscribed():
        probe = f"probe-{time.monotonic_ns()}"
        publish(mosquitto.port, topic, [probe])
        return probe in recorded(out)
    cluster.wait(subscribed, timeout=60, message="the spout subscribed and processing")
    publish(mosquitto.port, topic, first)
    cluster.wait(lambda: len(set(recorded(out)) & set(first)) >= 100, timeout=60, message="a third processed")
    mosquitto.stop()  # an orderly stop: its persistent sessions and queued QoS 1 messages are saved
    mosquitto.start()
    publish(mosquitto.port, topic, second)
    cluster.wait(lambda: set(first + second) <= set(recorded(out)), timeout=90,
                 message="every message processed after the restart")
    cluster.cli("kill", "mqtt-pipeline", "-w", "0")


def test_redis_down_for_10_seconds_mid_run_loses_nothing_and_writes_each_message_once(cluster, redis_server,
                                                                                      redis_url):
    import collections

    import redis
    from test_connectors_redis import TOPOLOGY as REDIS_TOPOLOGY
    from test_connectors_redis import group_info, output

    total = 1500
    with redis.Redis.from_url(redis_url) as c:
        pipe = c.pipeline(transaction=False)
        for i in range(total):
            pipe.xadd("in", {"n": str(i)})
        pipe.execute()
    try:
        result = cluster.cli("submit", REDIS_TOPOLOGY, "-c", f"redis.url={redis_url}",
                             "-c", "topology.state.backend=redis", "-c", f"topology.state.redis.url={redis_url}",
                             "-c", "topology.max_spout_pending=50")
        assert result.returncode == 0, result.stderr + cluster.logs()
        with redis.Redis.from_url(redis_url) as c:
            cluster.wait(lambda: c.xlen("out") >= total // 5, timeout=90, message="a fifth written")
            try:
                c.shutdown(save=True)  # its data survive, as a persistent Redis's do
            except redis.ConnectionError:
                pass
        cluster.wait(lambda: not redis_server.running, timeout=10, message="redis-server gone")
        time.sleep(10)  # the outage itself, not synchronisation
        redis_server.start()
        with redis.Redis.from_url(redis_url) as c:
            def drained():
                info = group_info(redis_url, "in", "pipeline")
                return c.xlen("out") >= total and info["pending"] == 0 and info["lag"] == 0
            cluster.wait(drained, timeout=180, message="every entry written and acked after the outage")
        assert output(redis_url) == collections.Counter(range(total))  # each message exactly once
    finally:
        (redis_server.directory / "dump.rdb").unlink(missing_ok=True)
