"""The Redis connectors against a real redis-server: acked entries leave the pending list,
failures replay or dead-letter, connection losses reconnect and lose nothing, and the
checkpoint-committed sink writes each message exactly once through rollbacks and kill -9."""

from __future__ import annotations

import collections
import signal
import threading
import time
from typing import Any

import psutil
import pytest
import redis
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT

from streamgale import Bolt, Config, LocalCluster, Topology
from streamgale.components import TopologyContext
from streamgale.connectors.redis_streams import (
    TXID_KEY,
    RedisCommitSink,
    RedisConnectorError,
    RedisKeyValueSink,
    RedisStreamSink,
    RedisStreamSpout,
)
from streamgale.dev.polling import poll_until
from streamgale.runtime.executor import StartFailed


class Entries(RedisStreamSpout):
    stream_key = "in"
    group = "g"
    fields = {"n": "n"}
    id_field = "entry_id"
    retry_backoff = 0.01
    retry_backoff_max = 0.05
    reconnect_backoff = 0.05
    reconnect_backoff_max = 0.5


class Collect(Bolt):
    """Records every n it processes; fails the first attempt of each n in ``fail_first``
    and every attempt of each n in ``fail_always``."""

    outputs = ["n"]
    seen: list[int] = []
    fail_first: set[int] = set()
    fail_always: set[int] = set()
    auto_ack = False

    def process(self, tup):
        n = int(tup["n"])
        if n in Collect.fail_always or n in Collect.fail_first:
            Collect.fail_first.discard(n)
            self.fail(tup)
            return
        Collect.seen.append(n)
        self.emit([n], anchors=[tup])
        self.ack(tup)


def reset_collect(fail_first=(), fail_always=()):
    Collect.seen = []
    Collect.fail_first = set(fail_first)
    Collect.fail_always = set(fail_always)


def fill(url: str, n: int, stream: str = "in", start: int = 0) -> None:
    with redis.Redis.from_url(url) as c:
        pipe = c.pipeline(transaction=False)
        for i in range(start, start + n):
            pipe.xadd(stream, {"n": str(i)})
        pipe.execute()


def spouts(cluster: LocalCluster) -> list[Any]:
    return [r.instance for e in cluster.loop.spouts for r in e.runners if isinstance(r.instance, RedisStreamSpout)]


def committed(cluster: LocalCluster) -> int:
    return sum(s.stats["committed"] + s.stats["dead_lettered"] for s in spouts(cluster) if hasattr(s, "stats"))


def group_info(url: str, stream: str = "in", group: str = "g") -> dict:
    with redis.Redis.from_url(url) as c:
        [info] = [g for g in c.xinfo_groups(stream) if g["name"].decode() == group]
        return info


def pending(url: str, stream: str = "in", group: str = "g") -> int:
    with redis.Redis.from_url(url) as c:
        return int(c.xpending(stream, group)["pending"])


def config(url: str, **settings) -> Config:
    return Config().merged({"redis.url": url, "topology.message_timeout": 10, **settings}, "test")


def pipeline(spout=Entries, parallelism=2) -> Topology:
    t = Topology("redis-test")
    t.spout("entries", spout, parallelism=parallelism)
    t.bolt("collect", Collect, parallelism=2).shuffle("entries")
    return t


def run_until(cluster: LocalCluster, predicate, timeout: float = 30.0):
    return cluster.run(duration=timeout, until=predicate)


# -- the source ------------------------------------------------------------------------------------


def test_every_entry_is_processed_acked_and_leaves_the_pending_list(redis_url):
    reset_collect()
    total = 600
    fill(redis_url, total)
    lc = LocalCluster(pipeline(), config(redis_url, **{"topology.max_spout_pending": 50}))
    result = run_until(lc, lambda: committed(lc) >= total)
    assert committed(lc) == total, result.errors
    assert sorted(Collect.seen) == list(range(total))  # each once: nothing failed, nothing replayed
    assert pending(redis_url) == 0
    info = group_info(redis_url)
    assert info["lag"] == 0 and info["entries-read"] == total
    names = {s._consumer for s in spouts(lc)}
    assert names == {f"redis-test-entries-{t}" for t in lc.topology.task_ids()["entries"]}
    assert all(s.stats["fetched"] > 0 for s in spouts(lc))  # the group shares the work


def test_a_failing_bolt_causes_replays_then_success(redis_url):
    total = 200
    reset_collect(fail_first=range(0, total, 4))
    fill(redis_url, total)
    lc = LocalCluster(pipeline(), config(redis_url))
    run_until(lc, lambda: committed(lc) >= total)
    assert sorted(Collect.seen) == list(range(total))
    assert sum(s.stats["retried"] for s in spouts(lc)) == total // 4
    assert pending(redis_url) == 0


def test_after_max_retries_an_entry_goes_to_the_dead_letter_stream(redis_url):
    class WithDeadLetters(Entries):
        max_retries = 2
        dead_letter_stream = "in-dead"

    total = 50
    reset_collect(fail_always={7, 21})
    fill(redis_url, total)
    lc = LocalCluster(pipeline(WithDeadLetters), config(redis_url))
    run_until(lc, lambda: committed(lc) >= total)
    assert sorted(Collect.seen) == sorted(set(range(total)) - {7, 21})
    assert sum(s.stats["dead_lettered"] for s in spouts(lc)) == 2
    with redis.Redis.from_url(redis_url) as c:
        dead = c.xrange("in-dead")
    assert sorted(int(f[b"n"]) for _, f in dead) == [7, 21]
    for _, f in dead:
        assert f[b"_source_stream"] == b"in" and f[b"_attempts"] == b"3" and f[b"_source_id"]
    assert pending(redis_url) == 0  # dead-lettered entries are acked too


def test_the_lag_metric_counts_entries_not_yet_delivered(redis_url):
    reset_collect()
    total = 400
    fill(redis_url, total)
    lc = LocalCluster(pipeline(parallelism=1), config(redis_url, **{"topology.max_spout_pending": 20}))
    seen: dict = {}

    def sample():
        done = committed(lc)
        if done >= 100 and "mid" not in seen:
            seen["mid"] = spouts(lc)[0].counters()
        if done >= total:
            seen["end"] = spouts(lc)[0].counters()
        return "end" in seen

    run_until(lc, sample)
    assert 0 < seen["mid"]["lag"] <= total - 100  # delivered so far: about 100 plus max_spout_pending
    assert seen["end"]["lag"] == 0 and seen["end"]["group_pending"] == 0
    assert group_info(redis_url)["lag"] == 0


def test_a_restarted_task_first_replays_its_own_pending_entries(redis_url):
    reset_collect()
    fill(redis_url, 30)
    lc = LocalCluster(pipeline(parallelism=1), config(redis_url))
    [task] = lc.topology.task_ids()["entries"]
    with redis.Redis.from_url(redis_url) as c:
        c.xgroup_create("in", "g", id="0")
        # A previous incarnation of this task read 10 entries and died before acking them.
        c.xreadgroup("g", f"redis-test-entries-{task}", {"in": ">"}, count=10)
    run_until(lc, lambda: committed(lc) >= 30)
    [spout] = spouts(lc)
    assert spout.stats["replayed_pending"] == 10
    assert sorted(Collect.seen) == list(range(30)) and pending(redis_url) == 0


def test_entries_of_a_dead_consumer_are_claimed_after_claim_idle(redis_url):
    class Claiming(Entries):
        claim_idle = 0.2

    reset_collect()
    fill(redis_url, 40)
    with redis.Redis.from_url(redis_url) as c:
        c.xgroup_create("in", "g", id="0")
        c.xreadgroup("g", "a-dead-consumer", {"in": ">"}, count=15)
    lc = LocalCluster(pipeline(Claiming, parallelism=1), config(redis_url))
    run_until(lc, lambda: committed(lc) >= 40)
    assert spouts(lc)[0].stats["claimed"] == 15
    assert sorted(Collect.seen) == list(range(40)) and pending(redis_url) == 0


def test_connection_kills_and_a_server_restart_reconnect_and_lose_nothing(redis_server, redis_url):
    """Faults, while entries are in flight: every client connection killed (CLIENT KILL), then
    the server shut down (SHUTDOWN SAVE: its data survive, as a persistent Redis's do) and down
    for 2 s (the fixture runs without persistence, so a kill -9 would lose the stream itself)."""
    reset_collect()
    total = 3000
    fill(redis_url, total)
    lc = LocalCluster(pipeline(), config(redis_url, **{"topology.max_spout_pending": 50}))
    faults: list[str] = []

    def inject():
        try:
            poll_until(lambda: committed(lc) >= total // 5, 30, "a fifth committed")
            with redis_server.client() as c:
                killed = c.client_kill_filter(_type="normal")
            faults.append(f"client kill {'some' if killed else 'none'}")
            poll_until(lambda: committed(lc) >= total // 2, 30, "half committed")
            with redis_server.client() as c:
                try:
                    c.shutdown(save=True)
                except redis.ConnectionError:
                    pass
            poll_until(lambda: not redis_server.running, 10, "redis-server gone")
            faults.append("server down")
            time.sleep(2)  # the outage itself, not synchronisation
            redis_server.start()
            faults.append("server up")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            faults.append(f"error: {exc!r}")

    thread = threading.Thread(target=inject, daemon=True)
    thread.start()
    try:
        run_until(lc, lambda: committed(lc) >= total and len(faults) >= 3, timeout=60)
        thread.join(10)
        assert faults == ["client kill some", "server down", "server up"]
        assert set(Collect.seen) == set(range(total))  # nothing lost (a few may be seen twice)
        stats = [s.counters() for s in spouts(lc)]
        # A connection killed between commands is replaced by redis-py's pool unseen; the outage is
        # seen by each task (at least once) and counted.
        assert all(s["connection_lost"] >= 1 and s["reconnects"] >= 1 for s in stats), stats
        assert all(s["connected"] for s in stats)
        assert pending(redis_url) == 0
    finally:
        (redis_server.directory / "dump.rdb").unlink(missing_ok=True)  # no stale data for later restarts


def test_settings_are_validated_naming_the_setting(redis_url):
    class NoStream(RedisStreamSpout):
        fields = ["n"]

    lc = LocalCluster(pipeline(NoStream), config(redis_url))
    with pytest.raises(StartFailed, match="open\\(\\) raised RedisConnectorError: .*'redis.stream'.*'stream_key'"):
        lc.run(duration=1)
    with pytest.raises(RedisConnectorError, match="fields must name"):
        type("Bad", (RedisStreamSpout,), {"fields": []})
    lc = LocalCluster(pipeline(), config(redis_url, **{"redis.claim_idle": "soon"}))
    with pytest.raises(StartFailed, match="RedisConnectorError: .*'redis.claim_idle'"):
        lc.run(duration=1)
    lc = LocalCluster(pipeline(), Config())
    with pytest.raises(StartFailed, match="RedisConnectorError: .*'redis.url'") as e:
        lc.run(duration=1)
    assert isinstance(e.value.error, RedisConnectorError)


def test_the_component_config_overrides_the_class_attributes(redis_url):
    reset_collect()
    fill(redis_url, 20, stream="other")
    t = Topology("redis-test")
    t.spout("entries", Entries, config={"redis.stream": "other", "redis.group": "og"})
    t.bolt("collect", Collect).shuffle("entries")
    lc = LocalCluster(t, config(redis_url))
    run_until(lc, lambda: committed(lc) >= 20)
    assert sorted(Collect.seen) == list(range(20)) and pending(redis_url, "other", "og") == 0


# -- at-least-once sinks ---------------------------------------------------------------------------


def test_stream_and_key_value_sinks_write_every_tuple(redis_url):
    class ToStream(RedisStreamSink):
        stream_key = "copied"

    class ToHash(RedisKeyValueSink):
        key_field = "n"
        value_field = "n"
        hash_key = "by-n"

    class ToKeys(RedisKeyValueSink):
        key_field = "n"
        value_field = "n"
        key_prefix = "n:"

    reset_collect()
    total = 250
    fill(redis_url, total)
    t = pipeline()
    for name, sink in (("stream", ToStream), ("hash", ToHash), ("keys", ToKeys)):
        t.bolt(name, sink).shuffle("collect")
    lc = LocalCluster(t, config(redis_url))
    run_until(lc, lambda: committed(lc) >= total)
    with redis.Redis.from_url(redis_url) as c:
        assert sorted(int(f[b"n"]) for _, f in c.xrange("copied")) == list(range(total))
        assert {int(k): int(v) for k, v in c.hgetall("by-n").items()} == {i: i for i in range(total)}
        assert int(c.get("n:42")) == 42 and len(c.keys("n:*")) == total


# -- the exactly-once sink -------------------------------------------------------------------------


class Out(RedisCommitSink):
    stream_key = "out"
    fields = ["n"]
    fail_prepare_once = False
    fail_commit_once = False

    def pre_prepare(self, txid):
        super().pre_prepare(txid)  # staged, and recorded in the state: then the checkpoint fails
        if Out.fail_prepare_once and self._staged:
            Out.fail_prepare_once = False
            raise RuntimeError("injected failure after staging")

    def pre_commit(self, txid):
        super().pre_commit(txid)  # applied: then the commit fails, and COMMIT comes again
        if Out.fail_commit_once and self.stats["applied_batches"]:
            Out.fail_commit_once = False
            raise RuntimeError("injected failure after applying")


def output(url: str, stream: str = "out") -> collections.Counter:
    with redis.Redis.from_url(url) as c:
        return collections.Counter(int(f[b"n"]) for _, f in c.xrange(stream))


def test_the_commit_sink_writes_each_message_exactly_once_through_rollbacks(redis_url):
    reset_collect(fail_first=range(0, 300, 10))
    Out.fail_prepare_once = Out.fail_commit_once = True
    total = 300
    fill(redis_url, total)
    t = pipeline()
    t.bolt("out", Out, parallelism=2).shuffle("collect")
    lc = LocalCluster(t, config(redis_url, **{"topology.state.checkpoint_interval": 0.05}))
    result = run_until(lc, lambda: committed(lc) >= total)
    assert not Out.fail_prepare_once and not Out.fail_commit_once  # both failures happened
    messages = {str(e.error) for e in result.errors}
    assert {"injected failure after staging", "injected failure after applying"} <= messages
    assert output(redis_url) == collections.Counter(range(total))  # each exactly once
    assert pending(redis_url) == 0
    sinks = [r.instance.inner for e in lc.executors for r in e.runners if isinstance(getattr(r.instance, "inner", None), Out)]
    assert sum(s.stats["dropped_batches"] for s in sinks) >= 1  # the rolled-back stage
    with redis.Redis.from_url(redis_url) as c:
        assert not c.keys("streamgale:sink:*:staged")  # nothing left staged


def _context(url: str, task: int = 1) -> TopologyContext:
    return TopologyContext("t", "out", task, 0, 1, config(url), {"out": (task,)}, {})


def test_a_restarted_task_applies_what_committed_while_it_was_down_and_drops_the_rest(redis_url):
    first = Out()
    first.prepare(_context(redis_url))
    first.init_state({})  # type: ignore[arg-type]
    for n in (1, 2):
        first.process(type("T", (), {"fields": ["n"], "__getitem__": lambda self, k, n=n: n})())
    first.pre_prepare(7)  # staged; the state recording txid 7 then commits without pre_commit (a restart)
    assert first.state == {TXID_KEY: 7}
    first.process(type("T", (), {"fields": ["n"], "__getitem__": lambda self, k: 3})())
    first.pre_prepare(8)  # staged, never committed: the state stays at 7
    second = Out()
    second.prepare(_context(redis_url))
    second.init_state({TXID_KEY: 7})  # type: ignore[arg-type]
    assert output(redis_url) == collections.Counter([1, 2])
    assert second.stats["dropped_batches"] == 1
    with redis.Redis.from_url(redis_url) as c:  # as if txid 7 were staged again after it was applied
        c.hset("streamgale:sink:t/out/1:staged", "7", c.hget("streamgale:sink:t/out/1:staged", "8") or b"\x91\x81\xa1n\x03")
    third = Out()  # and once more: the marker says 7 is applied, so nothing is written
    third.prepare(_context(redis_url))
    third.init_state({TXID_KEY: 7})  # type: ignore[arg-type]
    assert third.stats["already_applied"] == 1
    assert output(redis_url) == collections.Counter([1, 2])
    with redis.Redis.from_url(redis_url) as c:
        assert int(c.get("streamgale:sink:t/out/1:applied")) == 7 and not c.exists("streamgale:sink:t/out/1:staged")


# -- a real cluster ------------------------------------------------------------------------------

TOPOLOGY = str(ROOT / "tests" / "topologies" / "redis_pipeline.py")
TOTAL = 1500
RATE = 150


def sink_workers(cluster, cluster_state) -> list[psutil.Process]:
    """Live workers running sink tasks and not the spout."""
    [assignment] = cluster_state.assignments().values()
    wanted = {slot_id for slot_id, slot in assignment.slots.items()
              if "out" in {c for c, _ in slot.executors} and "entries" not in {c for c, _ in slot.executors}}
    found = []
    for p in cluster.worker_processes():
        cmd = p.cmdline()
        if f"{cmd[cmd.index('--supervisor-id') + 1]}:{cmd[cmd.index('--port') + 1]}" in wanted:
            found.append(p)
    return found


@pytest.mark.slow
def test_redis_to_commit_sink_exactly_once_through_a_sink_worker_kill(cluster, cluster_state, redis_url):
    stop = threading.Event()

    def produce():  # a producer adding entries at RATE per second
        started = time.monotonic()
        sent = 0
        with redis.Redis.from_url(redis_url) as c:
            while sent < TOTAL and not stop.is_set():
                due = min(TOTAL, int((time.monotonic() - started) * RATE) + 1)
                if due > sent:
                    pipe = c.pipeline(transaction=False)
                    for i in range(sent, due):
                        pipe.xadd("in", {"n": str(i)})
                    pipe.execute()
                    sent = due
                stop.wait(0.01)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        result = cluster.cli("submit", TOPOLOGY, "-c", f"redis.url={redis_url}", "-c", "topology.state.backend=redis",
                             "-c", f"topology.state.redis.url={redis_url}")
        assert result.returncode == 0, result.stderr + cluster.logs()
        with redis.Redis.from_url(redis_url) as c:
            cluster.wait(lambda: c.xlen("out") >= TOTAL // 4, timeout=90, message="a quarter written")
            victim = cluster.wait(lambda: sink_workers(cluster, cluster_state), timeout=60,
                                  message="a worker with sink tasks and no spout")[0]
            victim.send_signal(signal.SIGKILL)

            def drained():
                info = group_info(redis_url, "in", "pipeline")
                return c.xlen("out") >= TOTAL and info["pending"] == 0 and info["lag"] == 0

            cluster.wait(drained, timeout=180, message="every entry written and acked")
            assert output(redis_url) == collections.Counter(range(TOTAL))  # each message exactly once
            assert pending(redis_url, "in", "pipeline") == 0
            assert victim.pid not in {p.pid for p in cluster.worker_processes()}
    finally:
        stop.set()
        producer.join(5)
