"""The examples of docs/connectors.md: each builds a valid topology; the Redis one runs end to end."""

from __future__ import annotations

import re

import redis
from conftest import ROOT

from streamgale import Config, LocalCluster, Topology

BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def examples() -> list[dict]:
    """The namespace of each python block of docs/connectors.md, executed (not as __main__)."""
    out = []
    for code in BLOCK.findall((ROOT / "docs" / "connectors.md").read_text()):
        namespace: dict = {"__name__": "connectors_doc_example"}
        exec(compile(code, "docs/connectors.md", "exec"), namespace)
        out.append(namespace)
    return out


def test_every_example_builds_a_valid_topology():
    topologies = [v for ns in examples() for v in ns.values() if isinstance(v, Topology)]
    assert {t.name for t in topologies} == {"billing", "rabbitmq-upper", "sensor-averages", "events"}
    for t in topologies:
        t.validate()


def test_the_redis_example_bills_each_order_exactly_once(redis_url):
    [billing] = [ns for ns in examples() if isinstance(ns.get("topology"), Topology)
                 and ns["topology"].name == "billing"]
    with redis.Redis.from_url(redis_url) as c:
        for i in range(200):
            c.xadd("orders", {"order": f"o{i}", "amount": f"{i}.25"})
        config = Config().merged({"redis.url": redis_url, "topology.state.backend": "redis",
                                  "topology.state.redis.url": redis_url}, "test")
        cluster = LocalCluster(billing["topology"], config)
        cluster.run(duration=60, until=lambda: c.xlen("invoices") >= 200)
        invoices = {fields[b"order"].decode(): int(fields[b"cents"]) for _, fields in c.xrange("invoices")}
        assert c.xlen("invoices") == 200
        assert invoices == {f"o{i}": round((i + 0.25) * 100) for i in range(200)}
