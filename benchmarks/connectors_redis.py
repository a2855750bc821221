"""RedisStreamSpout against the raw client on the same redis-server, in the same run.

Reads N entries through a consumer group both ways: the raw client (XREADGROUP COUNT 1000 + XACK),
and the spout in a LocalCluster with one no-op bolt (acking on). Prints both rates and their ratio.
``python -m benchmarks.connectors_redis [N]``
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import redis

from streamgale import Bolt, Config, LocalCluster, Topology
from streamgale.connectors.redis_streams import RedisStreamSpout
from streamgale.dev.redis_server import RedisServer, find_redis_server


class Entries(RedisStreamSpout):
    stream_key = "bench"
    group = "spout"
    fields = ["n"]


class Drop(Bolt):
    def process(self, tup):
        pass


def fill(c: redis.Redis, n: int) -> None:
    for start in range(0, n, 5000):
        pipe = c.pipeline(transaction=False)
        for i in range(start, min(n, start + 5000)):
            pipe.xadd("bench", {"n": str(i)})
        pipe.execute()


def raw(c: redis.Redis, n: int) -> float:
    c.xgroup_create("bench", "raw", id="0")
    t0, done = time.perf_counter(), 0
    while done < n:
        reply = c.xreadgroup("raw", "c", {"bench": ">"}, count=1000)
        ids = [i for i, _ in reply[0][1]] if reply else []
        if ids:
            c.xack("bench", "raw", *ids)
        done += len(ids)
    return n / (time.perf_counter() - t0)


def spout(url: str, n: int) -> float:
    t = Topology("bench-redis")
    t.spout("entries", Entries)
    t.bolt("drop", Drop).shuffle("entries")
    lc = LocalCluster(t, Config().merged({"redis.url": url}, "benchmark"))
    [s] = [r.instance for e in lc.loop.spouts for r in e.runners]
    t0 = time.perf_counter()
    lc.run(duration=300, until=lambda: getattr(s, "stats", {}).get("committed", 0) >= n)
    return s.stats["committed"] / (time.perf_counter() - t0)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    exe = find_redis_server()
    if exe is None:
        sys.exit("redis-server is not on PATH")
    with tempfile.TemporaryDirectory() as d:
        server = RedisServer(exe, Path(d))
        server.start()
        try:
            with server.client() as c:
                fill(c, n)
                raw_rate = raw(c, n)
            spout_rate = spout(server.url, n)
        finally:
            server.kill()
    print(f"raw client: {raw_rate:,.0f} entries/s; RedisStreamSpout: {spout_rate:,.0f} entries/s; "
          f"ratio spout/raw: {spout_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
