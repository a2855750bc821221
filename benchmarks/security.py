"""What security costs: the cluster word count with security off and on, in one interleaved run.

Two clusters of 2 supervisors x 2 slots run side by side, one plain, one with
``security.enabled`` (CURVE authentication and encryption on every socket,
ZooKeeper digest ACLs); the runs alternate between them so that both see the
same machine. ``python -m benchmarks --groups security``.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import yaml

from streamgale.dev.secured import secured_settings

from .cluster import BenchCluster, cluster_word_count


def secured(directory: Path) -> BenchCluster:
    """A cluster whose daemons use a 'daemon' key, and whose CLI calls an 'admin' key."""
    keys, settings = secured_settings(directory, "streamgale:bench")
    keys.create("admin", "admin")
    client = directory / "admin.yaml"
    client.write_text(yaml.safe_dump({**settings, "security.identity": "admin"}))
    return BenchCluster(settings=settings, client_config=client)


def security_cost(sentences: int, runs: int) -> dict:
    rows: dict[str, list[float]] = {f"{mode}{'-acked' if acked else ''}": []
                                    for acked in (False, True) for mode in ("off", "on")}
    with tempfile.TemporaryDirectory(prefix="streamgale-bench-keys-") as tmp:
        with BenchCluster() as plain, secured(Path(tmp)) as secure:
            for _ in range(runs):
                for acked in (False, True):
                    for mode, cluster in (("off", plain), ("on", secure)):
                        rows[f"{mode}{'-acked' if acked else ''}"].append(
                            cluster_word_count(cluster, sentences, workers=2, acked=acked))
    medians = {name: statistics.median(r) for name, r in rows.items()}
    print(f"\nsecurity cost: cluster word count, 2 workers, {sentences:,} sentences x 10 words, {runs} runs "
          "(words/s)")
    print(f"{'tracking':<10} {'security off':>14} {'security on':>14} {'on / off':>9}")
    table = {}
    for label, suffix in (("unacked", ""), ("acked", "-acked")):
        off, on = medians[f"off{suffix}"], medians[f"on{suffix}"]
        print(f"{label:<10} {off:>14,.0f} {on:>14,.0f} {on / off:>8.2f}x")
        table[label] = {"off": off, "on": on, "ratio": on / off, "runs_off": rows[f"off{suffix}"],
                        "runs_on": rows[f"on{suffix}"]}
    return table
