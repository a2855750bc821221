"""What checkpointed state costs: ``python -m benchmarks.state``.

The word count (N sentences x 10 words, running count per word), acked, with its
count bolt stateless and as a :class:`~streamgale.state.StatefulBolt` checkpointing
every ``--interval`` seconds, interleaved ``--runs`` times in one run:

- local mode (one process), memory and sqlite backends, words per second until
  every sentence is acked (a stateful count acks a sentence only once its counts
  are committed);
- a real cluster on this machine (ZooKeeper, nimbus, 2 supervisors, 2 workers,
  started through the CLI) against a real ``redis-server`` (skipped if it is not
  installed: ``make system-packages``), words per second from the first emit to
  the last word counted (``benchmarks.cluster.cluster_word_count``).

Each stateful row is also given relative to the stateless row of the same mode
in the same run. ``topology.max_spout_pending`` is raised for every row alike
(held acks keep a sentence pending for up to an interval; see docs/state.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from streamgale import Bolt, Config, LocalCluster, ReliableSpout, StatefulBolt, Topology

from .topologies.cluster_word_count import Split
from .wordcount import sentences

PENDING = 100_000  # max_spout_pending for every row


class Sentences(ReliableSpout):
    outputs = ["sentence"]
    data: list[list[str]] = []

    def open(self, context):
        self.todo = list(enumerate(Sentences.data))
        self.todo.reverse()

    def next_message(self):
        return self.todo.pop() if self.todo else None


class Count(Bolt):
    outputs = ["word", "count"]

    def prepare(self, context):
        self.counts: dict[str, int] = {}

    def process(self, tup):
        word = tup.values[0]
        n = self.counts.get(word, 0) + 1
        self.counts[word] = n
        self.emit([word, n])


class StatefulCount(StatefulBolt):
    outputs = ["word", "count"]

    def process(self, tup):
        word = tup.values[0]
        state = self.state
        n = state.get(word, 0) + 1
        state[word] = n
        self.emit([word, n])


def local_rate(data: list[list[str]], count: type, settings: dict) -> float:
    """Words per second in local mode, from start until every sentence is acked."""
    Sentences.data = data
    t = Topology("bench-state")
    t.spout("sentences", Sentences)
    t.bolt("split", Split, parallelism=4).shuffle("sentences")
    t.bolt("count", count, parallelism=4).fields("split", "word")
    config = Config().merged({"topology.max_spout_pending": PENDING, **settings}, "benchmark")
    cluster = LocalCluster(t, config)
    [spout] = [r.instance for e in cluster.loop.spouts for r in e.runners if isinstance(r.instance, Sentences)]
    start = time.perf_counter()
    result = cluster.run(duration=600, until=lambda: getattr(spout, "acked", 0) == len(data))
    elapsed = time.perf_counter() - start
    if getattr(spout, "acked", 0) != len(data) or result.errors:
        raise RuntimeError(f"acked {getattr(spout, 'acked', 0)} of {len(data)}; errors: {result.errors[:1]}")
    return 10 * len(data) / elapsed


def rows(args: argparse.Namespace, tmp: Path) -> dict[str, list[float]]:
    data = sentences(args.sentences)
    interval = {"topology.state.checkpoint_interval": args.interval}
    runs: dict[str, Callable[[], float]] = {
        "local, stateless": lambda: local_rate(data, Count, {}),
        "local, stateful memory": lambda: local_rate(data, StatefulCount, interval),
        "local, stateful sqlite": lambda: local_rate(data, StatefulCount, {
            **interval, "topology.state.backend": "sqlite",
            "topology.state.sqlite.path": str(tmp / f"state-{time.monotonic_ns()}.sqlite")}),
    }
    results: dict[str, list[float]] = {name: [] for name in runs}
    cluster_rows(args, tmp, runs, results)
    for _ in range(args.runs):
        for name, run in runs.items():
            results[name].append(run())
    return results


def cluster_rows(args: argparse.Namespace, tmp: Path, runs: dict, results: dict) -> None:
    """Adds the cluster rows to ``runs`` when redis-server is installed (its server and
    cluster are closed by ``close_cluster``)."""
    from streamgale.dev.redis_server import RedisServer, find_redis_server

    executable = find_redis_server()
    if executable is None:
        print("no redis-server on PATH (make system-packages): cluster rows skipped")
        return
    from .cluster import BenchCluster, cluster_word_count

    redis = RedisServer(executable, tmp)
    redis.start()
    cluster = BenchCluster()
    cluster.start()
    args.close = lambda: (cluster.close(), redis.kill())
    common = ("bench.spouts=1", f"topology.max_spout_pending={PENDING}")

    def stateful() -> float:
        with redis.client() as c:
            c.flushdb()
        return cluster_word_count(cluster, args.sentences, 2, acked=True, config=(
            *common, "bench.stateful=true", "topology.state.backend=redis",
            f"topology.state.redis.url={redis.url}", f"topology.state.checkpoint_interval={args.interval}"))

    runs["cluster 2 workers, stateless"] = lambda: cluster_word_count(cluster, args.sentences, 2, acked=True,
                                                                     config=common)
    runs["cluster 2 workers, stateful redis"] = stateful
    results.update({name: [] for name in runs if name not in results})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.state", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--interval", type=float, default=1.0, help="checkpoint interval, seconds (default 1)")
    args = ap.parse_args(argv)
    args.close = lambda: None
    with tempfile.TemporaryDirectory(prefix="streamgale-bench-state-") as tmp:
        try:
            results = rows(args, Path(tmp))
        finally:
            args.close()
    print(f"\ncheckpointed state: word count, {args.sentences:,} sentences x 10 words, acked, checkpoint every "
          f"{args.interval:g} s, {args.runs} runs interleaved (words/s)")
    print(f"{'scenario':<36} {'median':>10} {'min':>10} {'max':>10} {'vs stateless':>13}")
    medians = {name: statistics.median(r) for name, r in results.items()}
    for name, rates in results.items():
        base = medians[name.split(",")[0] + ", stateless"]
        print(f"{name:<36} {medians[name]:>10,.0f} {min(rates):>10,.0f} {max(rates):>10,.0f} "
              f"{medians[name] / base:>12.2f}x")


if __name__ == "__main__":
    main()
