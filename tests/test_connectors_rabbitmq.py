"""The RabbitMQ connector (issue 14) against a real broker node (one per session).

In-process runs (LocalCluster) prove commit-on-ack, replay through nack+requeue and local
replay, dead-lettering after max_retries, surviving a broker restart mid-run, and the sink's
confirmed persistent publishes; a slow cluster test kill -9s a worker mid-run. Every test ends
with the queue at 0 ready and 0 unacked (``rabbitmqctl list_queues``: no management plugin).
"""

from __future__ import annotations

import collections
import json
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT, wait_for

from streamgale import Bolt, Config, LocalCluster, ReliableSpout, Topology
from streamgale.connectors.rabbitmq import RabbitMQSink, RabbitMQSource


def publish(server, queue: str, bodies, message_ids: bool = True, dead_letter_queue: str | None = None) -> None:
    """Declare ``queue`` (durable, as the source would) and publish ``bodies`` persistent, confirmed."""
    with server.connection() as conn:
        channel = conn.channel()
        arguments = None
        if dead_letter_queue is not None:
            channel.queue_declare(dead_letter_queue, durable=True)
            arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letter_queue}
        channel.queue_declare(queue, durable=True, arguments=arguments)
        channel.confirm_delivery()
        for body in bodies:
            props = pika.BasicProperties(delivery_mode=2, content_type="text/plain",
                                         message_id=uuid.uuid4().hex if message_ids else None)
            channel.basic_publish("", queue, body.encode(), props, mandatory=True)


def drain(server, queue: str) -> list[bytes]:
    """Every ready message of ``queue``, consumed and acked."""
    out = []
    with server.connection() as conn:
        channel = conn.channel()
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append(body)


def assert_queue_empty(server, queue: str) -> None:
    """0 ready and 0 unacked (acks reach the broker asynchronously: a bounded poll)."""
    last: list[Any] = []

    def empty():
        last[:] = [server.queue_counts(queue)]
        return last[0] == (0, 0)
    try:
        wait_for(empty, timeout=20, interval=0.2, message=f"queue {queue} at 0 ready, 0 unacked")
    except AssertionError:
        raise AssertionError(f"queue {queue} (ready, unacked) = {last[0]}") from None


class Record(Bolt):
    """Records each body seen; fails the first ``fail_first`` attempts of bodies in ``failing``."""

    outputs = ["body"]
    seen: collections.Counter = collections.Counter()
    failing: set[str] = set()
    fail_first = 0  # None: always
    _lock = threading.Lock()

    def process(self, tup):
        body = tup["body"]
        body = body if isinstance(body, (str, bytes)) else json.dumps(body)
        with Record._lock:
            Record.seen[body] += 1
            n = Record.seen[body]
        if body in Record.failing and (Record.fail_first is None or n <= Record.fail_first):
            self.fail(tup)
            return
        self.emit([body])


class Hold(Bolt):
    """Holds every input unacked until ``Hold.gate`` is set (then acks them, on ticks too)."""

    outputs: list[str] = []
    auto_ack = False
    gate = threading.Event()
    held = 0
    seen: set[str] = set()

    @classmethod
    def component_config(cls):
        return {"topology.tick_interval": 0.05}

    def prepare(self, context):
        self.waiting = []

    def process(self, tup):
        if not tup.is_tick:
            Hold.seen.add(tup["body"])
            self.waiting.append(tup)
            Hold.held += 1
        if Hold.gate.is_set():
            for t in self.waiting:
                self.ack(t)
            self.waiting = []


def reset_bolts():
    Record.seen = collections.Counter()
    Record.failing = set()
    Record.fail_first = 0
    Hold.gate = threading.Event()
    Hold.held = 0
    Hold.seen = set()


def config(**settings) -> Config:
    return Config().merged({"topology.message_timeout": 10, **settings}, "test")


def source_of(cluster: LocalCluster) -> RabbitMQSource:
    [spout] = [r.instance for e in cluster.loop.spouts for r in e.runners if isinstance(r.instance, RabbitMQSource)]
    return spout


def pipeline(source: RabbitMQSource, bolt=Record, name="rmq") -> Topology:
    t = Topology(name)
    t.spout("queue", source)
    t.bolt("record", bolt, parallelism=2).shuffle("queue")
    return t


def bodies(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def run_until_committed(topology: Topology, cfg: Config, total: int, timeout: float = 60):
    cluster = LocalCluster(topology, cfg)
    spout = source_of(cluster)
    result = cluster.run(duration=timeout, until=lambda: spout.stats["committed"] >= total)
    assert spout.stats["committed"] >= total, (spout.counters(), result.errors[:3])
    return cluster, spout


# -- local mode --------------------------------------------------------------------------------


def test_every_message_is_processed_once_and_acked(rabbitmq, rabbitmq_queue):
    reset_bolts()
    n = 3000
    publish(rabbitmq, rabbitmq_queue, bodies(n))
    source = RabbitMQSource(rabbitmq_queue, rabbitmq.url, include_routing_key=True)
    assert source.outputs == ["body", "routing_key"]
    cluster, spout = run_until_committed(pipeline(source), config(**{"topology.max_spout_pending": 300}), n)
    assert Record.seen == collections.Counter(bodies(n))  # every one, once (no failure, no loss)
    counters = spout.counters()
    assert counters["fetched"] == n and counters["committed"] == n and counters["stale_dropped"] == 0
    assert counters["lag"] is None  # closed: the run is over
    assert_queue_empty(rabbitmq, rabbitmq_queue)


def test_prefetch_is_bounded_by_max_spout_pending_and_lag_is_the_ready_count(rabbitmq, rabbitmq_queue):
    reset_bolts()
    publish(rabbitmq, rabbitmq_queue, bodies(500))
    source = RabbitMQSource(rabbitmq_queue, rabbitmq.url, prefetch=1000)
    cluster = LocalCluster(pipeline(source, Hold), config(**{"topology.max_spout_pending": 50}))
    spout = source_of(cluster)
    seen: dict[str, Any] = {}

    def held_all():
        if Hold.held < 50:
            return False
        seen["counts"] = rabbitmq.queue_counts(rabbitmq_queue)  # while the spout holds them
        seen["counters"] = spout.counters()
        return True
    cluster.run(duration=30, until=held_all)
    assert Hold.held == 50 and seen["counts"] == (450, 50)  # the broker delivered no more than the limit
    assert seen["counters"]["pending"] == 50 and seen["counters"]["lag"] == 450
    Hold.gate.set()  # the run is over: its connection closed, the broker requeued the 50
    run_until_committed(pipeline(RabbitMQSource(rabbitmq_queue, rabbitmq.url), Record), config(), 500)
    assert set(Record.seen) == set(bodies(500))
    assert_queue_empty(rabbitmq, rabbitmq_queue)


@pytest.mark.parametrize("requeue", [True, False], ids=["nack-requeue", "local-replay"])
def test_failed_messages_come_back_until_processed(rabbitmq, rabbitmq_queue, requeue):
    reset_bolts()
    n = 1000
    Record.failing = {f"m{i}" for i in range(0, n, 10)}
    Record.fail_first = 2  # each of those fails twice, then passes
    publish(rabbitmq, rabbitmq_queue, bodies(n))
    source = RabbitMQSource(rabbitmq_queue, rabbitmq.url, requeue=requeue, max_retries=5)
    source.retry_backoff = 0.01
    cluster, spout = run_until_committed(pipeline(source), config(), n)
    assert set(Record.seen) == set(bodies(n))
    assert all(Record.seen[b] == 3 for b in Record.failing)
    counters = spout.counters()
    if requeue:
        assert counters["requeued"] == 2 * len(Record.failing) and counters["redelivered"] >= counters["requeued"]
    else:
        assert counters["requeued"] == 0 and counters["retried"] == 2 * len(Record.failing)
    assert counters["dead_lettered"] == 0
    assert_queue_empty(rabbitmq, rabbitmq_queue)


@pytest.mark.parametrize("requeue", [True, False], ids=["nack-requeue", "local-replay"])
def test_a_message_failing_max_retries_times_is_dead_lettered(rabbitmq, rabbitmq_queue, requeue):
    reset_bolts()
    n, dead = 400, f"{rabbitmq_queue}.dead"
    Record.failing = {f"m{i}" for i in range(0, n, 40)}
    Record.fail_first = None  # always
    publish(rabbitmq, rabbitmq_queue, bodies(n), dead_letter_queue=dead)
    source = RabbitMQSource(rabbitmq_queue, rabbitmq.url, requeue=requeue, max_retries=2, dead_letter_queue=dead)
    source.retry_backoff = 0.01
    cluster = LocalCluster(pipeline(source), config())
    spout = source_of(cluster)
    good = n - len(Record.failing)
    cluster.run(duration=60, until=lambda: spout.stats["committed"] >= good
                and spout.stats["dead_lettered"] >= len(Record.failing))
    assert spout.stats["dead_lettered"] == len(Record.failing), spout.counters()
    assert all(Record.seen[b] == 3 for b in Record.failing)  # the first try and max_retries more
    assert_queue_empty(rabbitmq, rabbitmq_queue)
    assert sorted(drain(rabbitmq, dead)) == sorted(b.encode() for b in Record.failing)


def test_without_a_dead_letter_exchange_a_poison_message_is_logged_and_dropped(rabbitmq, rabbitmq_queue):
    reset_bolts()
    Record.failing, Record.fail_first = {"m3"}, None
    publish(rabbitmq, rabbitmq_queue, bodies(10))
    source = RabbitMQSource(rabbitmq_queue, rabbitmq.url, max_retries=1)
    source.retry_backoff = 0.01
    cluster = LocalCluster(pipeline(source), config())
    spout = source_of(cluster)
    cluster.run(duration=30, until=lambda: spout.stats["committed"] >= 9 and spout.stats["dead_lettered"] >= 1)
    assert spout.stats["dead_lettered"] == 1 and Record.seen["m3"] == 2
    assert_queue_empty(rabbitmq, rabbitmq_queue)


def test_undecodable_json_is_dead_lettered_at_once(rabbitmq, rabbitmq_queue):
    reset_bolts()
    dead = f"{rabbitmq_queue}.dead"
    publish(rabbitmq, rabbitmq_queue, ['{"n": 1}', "not json", '[2]'], dead_letter_queue=dead)
    source = RabbitMQSource(rabbitmq_queue, rabbitmq.url, decode="json", dead_letter_queue=dead)
    cluster = LocalCluster(pipeline(source), config())
    spout = source_of(cluster)
    cluster.run(duration=30, until=lambda: spout.stats["committed"] >= 2)
    assert spout.stats["undecodable"] == 1
    assert_queue_empty(rabbitmq, rabbitmq_queue)
    assert drain(rabbitmq, dead) == [b"not json"]


def test_the_topology_survives_a_broker_restart_mid_run(rabbitmq, rabbitmq_queue):
    reset_bolts()
    n = 2000
    publish(rabbitmq, rabbitmq_queue, bodies(n))
    source = RabbitMQSource(rabbitmq_queue, rabbitmq.url, prefetch=100)
    source.reconnect_backoff_max = 0.5
    cluster = LocalCluster(pipeline(source, Hold), config(**{"topology.max_spout_pending": 1000}))
    spout = source_of(cluster)
    done = threading.Event()
    runner = threading.Thread(target=lambda: (cluster.run(duration=120, until=done.is_set)), daemon=True)
    runner.start()
    try:
        wait_for(lambda: Hold.held >= 100, timeout=30, message="100 messages held in flight")
        rabbitmq.stop()  # an orderly shutdown: durable queue and persistent messages survive
        wait_for(lambda: spout.stats["connection_lost"] >= 1, timeout=30, message="the spout to see the loss")
        Hold.gate.set()  # the held tuples are acked while the broker is down: their commits are stale
        rabbitmq.start()
        wait_for(lambda: spout.stats["reconnects"] >= 1, timeout=60, message="the spout reconnected")
        wait_for(lambda: Hold.seen == set(bodies(n)), timeout=60, message="every message processed")
        assert_queue_empty(rabbitmq, rabbitmq_queue)  # redeliveries of the held ones acked too
        wait_for(lambda: spout.counters()["pending"] == 0, timeout=30, message="nothing pending")
    finally:
        done.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert spout.stats["stale_dropped"] >= 100  # never sent on the new channel
    assert spout.stats["redelivered"] >= 100  # the broker gave the unacked ones back


class Numbers(ReliableSpout):
    outputs = ["body", "key"]
    total = 1000

    def open(self, context):
        self.todo = list(range(self.total))
        self.todo.reverse()

    def next_message(self):
        if not self.todo:
            return None
        n = self.todo.pop()
        body: Any = {"n": n} if n % 3 == 0 else f"t{n}" if n % 3 == 1 else f"b{n}".encode()
        return n, [body, "k"]


def test_the_sink_publishes_persistent_confirmed_messages_that_arrive(rabbitmq, rabbitmq_queue):
    t = Topology("rmq-sink")
    t.spout("numbers", Numbers)
    t.bolt("sink", RabbitMQSink(rabbitmq_queue, url=rabbitmq.url, declare_queue=rabbitmq_queue),
           parallelism=2).shuffle("numbers")
    cluster = LocalCluster(t, config())
    [spout] = [r.instance for e in cluster.loop.spouts for r in e.runners if isinstance(r.instance, Numbers)]
    result = cluster.run(duration=60, until=lambda: getattr(spout, "acked", 0) == Numbers.total)
    assert spout.acked == Numbers.total and spout.replayed == 0, result.errors[:3]
    assert rabbitmq.queue_counts(rabbitmq_queue) == (Numbers.total, 0)
    with rabbitmq.connection() as conn:
        channel = conn.channel()
        got = []
        for _ in range(Numbers.total):
            method, props, body = channel.basic_get(rabbitmq_queue, auto_ack=True)
            got.append((props.delivery_mode, props.content_type, body, bool(props.message_id)))
    assert {g[0] for g in got} == {2} and all(g[3] for g in got)
    want = set()
    for n in range(Numbers.total):
        want.add((2, "application/json", f'{{"n":{n}}}'.encode(), True) if n % 3 == 0 else
                 (2, "text/plain", f"t{n}".encode(), True) if n % 3 == 1 else (2, None, f"b{n}".encode(), True))
    assert set(got) == want


def test_the_sink_fails_a_batch_the_broker_cannot_route(rabbitmq, rabbitmq_queue):
    t = Topology("rmq-sink-unroutable")
    t.spout("numbers", Numbers)
    t.bolt("sink", RabbitMQSink(f"{rabbitmq_queue}-missing", url=rabbitmq.url)).shuffle("numbers")
    cluster = LocalCluster(t, config())
    [spout] = [r.instance for e in cluster.loop.spouts for r in e.runners if isinstance(r.instance, Numbers)]
    cluster.run(duration=30, until=lambda: getattr(spout, "failed", 0) >= 100)
    assert spout.acked == 0 and spout.failed >= 100  # unroutable (mandatory): never acked


# -- a real cluster ----------------------------------------------------------------------------

TOPOLOGY = str(ROOT / "tests" / "topologies" / "rabbitmq_pipeline.py")
TOTAL = 3000


def processed(out: Path) -> set[str]:
    return {line.split()[2] for f in out.glob("work-*.txt") for line in f.read_text().splitlines() if line.strip()}


@pytest.mark.slow
def test_a_killed_worker_loses_no_message(cluster, cluster_state, rabbitmq, rabbitmq_queue, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    publish(rabbitmq, rabbitmq_queue, bodies(TOTAL))
    result = cluster.cli("submit", TOPOLOGY, "-c", f"test.output_dir={out}", "-c", f"rabbitmq.url={rabbitmq.url}",
                         "-c", f"rabbitmq.queue={rabbitmq_queue}", "-c", "test.work_delay=0.005")
    assert result.returncode == 0, result.stderr + cluster.logs()
    cluster.wait(lambda: len(processed(out)) >= TOTAL // 10, timeout=90, message="a tenth processed")
    [assignment] = cluster_state.assignments().values()
    victims_slots = {sid for sid, slot in assignment.slots.items()
                     if any(c == "work" for c, _ in slot.executors) and not any(c == "queue" for c, _ in slot.executors)}
    victims = cluster.wait(lambda: [p for p in cluster.worker_processes() if _slot_of(p) in victims_slots],
                           timeout=60, message="a live worker with work tasks and not the spout")
    victims[0].send_signal(signal.SIGKILL)
    assert len(processed(out)) < TOTAL  # mid-run
    cluster.wait(lambda: processed(out) == set(bodies(TOTAL)), timeout=180, message="every message processed")
    cluster.wait(lambda: rabbitmq.queue_counts(rabbitmq_queue) == (0, 0), timeout=60,
                 message="the queue at 0 ready, 0 unacked")
    assert victims[0].pid not in {p.pid for p in cluster.worker_processes()}
    # Duplicates are allowed, not required (a tuple is written twice only if its worker died between
    # writing and acking it), and whether the killed worker held work at that instant is timing.
    lines = sum(len(f.read_text().splitlines()) for f in out.glob("work-*.txt"))
    assert lines >= TOTAL


def _slot_of(p) -> str:
    cmd = p.cmdline()
    return f"{cmd[cmd.index('--supervisor-id') + 1]}:{cmd[cmd.index('--port') + 1]}"
