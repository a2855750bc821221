"""How the cluster word count scales with workers and spout tasks (the suite's ``scaling`` group).

The cluster word count of the throughput group (``benchmarks.cluster.cluster_word_count``,
words per second from the first spout emit to the last word counted) on 1, 2 and
4 workers with the spout's parallelism 1 and 2 (``bench.spouts``; split and count
keep 4 tasks each), unacked and acked: 12 configurations, run interleaved
``runs`` times on the same cluster, so load changes on a shared machine hit
them alike. Each median is also given relative to the 1-worker, 1-spout median
of the same mode (unacked or acked).
"""

from __future__ import annotations

import statistics

from .cluster import BenchCluster, cluster_word_count

WORKERS = (1, 2, 4)
SPOUTS = (1, 2)
#: Table columns, in order: (spout tasks, acked).
COLUMNS = tuple((spouts, acked) for spouts in SPOUTS for acked in (False, True))


def column_label(spouts: int, acked: bool) -> str:
    return f"spouts={spouts} {'acked' if acked else 'unacked'}"


def scaling_runs(cluster: BenchCluster, sentences: int, runs: int) -> dict[tuple[int, int, bool], list[float]]:
    """Words/s of every (workers, spouts, acked) configuration, ``runs`` interleaved rounds."""
    configs = [(w, s, a) for w in WORKERS for s, a in COLUMNS]
    results: dict[tuple[int, int, bool], list[float]] = {c: [] for c in configs}
    for _ in range(runs):
        for workers, spouts, acked in configs:
            results[(workers, spouts, acked)].append(
                cluster_word_count(cluster, sentences, workers, acked=acked, config=(f"bench.spouts={spouts}",)))
    return results


def summarize(results: dict[tuple[int, int, bool], list[float]]) -> list[dict]:
    """One row per configuration: median, min, max, runs, and the median relative to the
    1-worker, 1-spout median of the same mode (None if that one was not run)."""
    medians = {c: statistics.median(r) for c, r in results.items()}
    rows = []
    for (workers, spouts, acked), rates in results.items():
        base = medians.get((1, 1, acked))
        m = medians[(workers, spouts, acked)]
        rows.append({"workers": workers, "spouts": spouts, "acked": acked, "median": m, "min": min(rates),
                     "max": max(rates), "runs": rates, "vs_1w_1s": m / base if base else None})
    return rows


def print_scaling(rows: list[dict], sentences: int, runs: int) -> None:
    print(f"\nscaling: cluster word count, {sentences:,} sentences x 10 words, {runs} runs "
          f"(words/s median, and relative to 1 worker spouts=1 of the same mode)")
    print(f"{'workers':<8}" + "".join(f" {column_label(s, a):>24}" for s, a in COLUMNS))
    by_config = {(r["workers"], r["spouts"], r["acked"]): r for r in rows}
    for workers in WORKERS:
        cells = []
        for spouts, acked in COLUMNS:
            row = by_config.get((workers, spouts, acked))
            if row is None:
                cells.append(f" {'':>24}")
                continue
            rel = f"({row['vs_1w_1s']:.2f}x)" if row["vs_1w_1s"] is not None else ""
            cells.append(f" {row['median']:>15,.0f} {rel:>8}")
        print(f"{workers:<8}" + "".join(cells))


def scaling(cluster: BenchCluster, sentences: int, runs: int) -> dict:
    """Run, print and return the scaling table (the JSON report's "scaling")."""
    rows = summarize(scaling_runs(cluster, sentences, runs))
    print_scaling(rows, sentences, runs)
    return {"workers": list(WORKERS), "spouts": list(SPOUTS), "rows": rows}
