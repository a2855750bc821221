"""RabbitMQSource and MqttSource against their raw clients on the same server, in the same run.

- RabbitMQ: N persistent messages in a durable queue, consumed with manual acks (prefetch
  1,000) by pika directly, then by the spout in a LocalCluster with one no-op bolt
  (acking on, so each message is acked to the broker only after its tuple is acked).
- MQTT: a QoS 1 subscriber (paho directly, then the spout) receives N QoS 1 messages
  published once it has subscribed; the time runs from the first publish to the last
  message received (raw) or committed (spout).

``python -m benchmarks.connectors_brokers [N]`` (servers from ``make system-packages``;
a broker that is not installed is skipped). Prints rates and the spout/raw ratios.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

from streamgale import Bolt, Config, LocalCluster, Topology


class Drop(Bolt):
    def process(self, tup):
        pass


def run_spout(spout, n: int, on_ready=None) -> float:
    t = Topology(f"bench-{type(spout).__name__.lower()}")
    t.spout("source", spout)
    t.bolt("drop", Drop).shuffle("source")
    lc = LocalCluster(t, Config().merged({"topology.max_spout_pending": 1000}, "benchmark"))
    [s] = [r.instance for e in lc.loop.spouts for r in e.runners]
    started: list[float] = []

    def done() -> bool:
        if not started and on_ready is not None and s.counters().get("connected"):
            started.append(time.perf_counter())
            threading.Thread(target=on_ready, daemon=True).start()
        return s.counters().get("committed", 0) >= n

    t0 = time.perf_counter()
    lc.run(duration=300, until=done)
    return n / (time.perf_counter() - (started[0] if started else t0))


def rabbitmq(n: int, tmp: Path) -> tuple[float, float] | None:
    import pika

    from streamgale.connectors.rabbitmq import RabbitMQSource
    from streamgale.dev.rabbitmq_server import RabbitMQServer, find_rabbitmq_server

    executable = find_rabbitmq_server()
    if executable is None:
        return None
    (tmp / "rabbitmq").mkdir()
    server = RabbitMQServer(executable, tmp / "rabbitmq")
    server.start()
    try:
        def fill(queue: str) -> None:
            with server.connection() as conn:
                ch = conn.channel()
                ch.queue_declare(queue, durable=True)
                props = pika.BasicProperties(delivery_mode=2)
                for i in range(n):
                    ch.basic_publish("", queue, str(i).encode(), props)

        fill("raw")
        with server.connection() as conn:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1000)
            got = [0]

            def on_message(channel, method, properties, body):
                channel.basic_ack(method.delivery_tag)
                got[0] += 1
                if got[0] >= n:
                    channel.stop_consuming()

            ch.basic_consume("raw", on_message)
            t0 = time.perf_counter()
            ch.start_consuming()
            raw = n / (time.perf_counter() - t0)
        fill("spout")
        spout_rate = run_spout(RabbitMQSource("spout", server.url, prefetch=1000), n)
        return raw, spout_rate
    finally:
        server.close()


def mqtt(n: int, tmp: Path) -> tuple[float, float] | None:
    import paho.mqtt.client as paho

    from streamgale.connectors.mqtt import MqttSource
    from streamgale.dev.mosquitto_server import MosquittoServer, find_mosquitto

    executable = find_mosquitto()
    if executable is None:
        return None
    (tmp / "mosquitto").mkdir()
    server = MosquittoServer(executable, tmp / "mosquitto")
    server.start()

    def publish(topic: str) -> None:
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
        pub.max_inflight_messages_set(1000)
        pub.connect("127.0.0.1", server.port)
        pub.loop_start()
        infos = [pub.publish(topic, str(i), qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(30)
        pub.loop_stop()
        pub.disconnect()

    try:
        got = threading.Event()
        count = [0]

        def on_message(client, userdata, message):
            count[0] += 1
            if count[0] >= n:
                got.set()

        sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=paho.MQTTv5)
        sub.on_message = on_message
        subscribed = threading.Event()
        sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        sub.connect("127.0.0.1", server.port)
        sub.loop_start()
        sub.subscribe("bench/raw", qos=1)
        subscribed.wait(10)
        t0 = time.perf_counter()
        publish("bench/raw")
        got.wait(120)
        raw = n / (time.perf_counter() - t0)
        sub.loop_stop()
        sub.disconnect()
        spout_rate = run_spout(MqttSource("bench/spout", "127.0.0.1", server.port), n,
                               on_ready=lambda: publish("bench/spout"))
        return raw, spout_rate
    finally:
        server.kill()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 20_000
    print(f"\nconnector sources against their raw clients, {n:,} messages each, same servers, same run")
    print(f"{'broker':<10} {'raw msg/s':>12} {'spout msg/s':>12} {'spout/raw':>10}")
    with tempfile.TemporaryDirectory(prefix="streamgale-bench-brokers-") as tmp:
        for name, fn in (("rabbitmq", rabbitmq), ("mqtt", mqtt)):
            result = fn(n, Path(tmp))
            if result is None:
                print(f"{name:<10} {'(not installed: make system-packages)':>36}")
                continue
            raw, spout_rate = result
            print(f"{name:<10} {raw:>12,.0f} {spout_rate:>12,.0f} {spout_rate / raw:>9.2f}x")


if __name__ == "__main__":
    main()
