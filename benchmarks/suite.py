"""The benchmark suite: ``python -m benchmarks [options]``; prints tables, writes JSON.

Every figure that is compared is measured in the same run as its reference
(runs are interleaved, so load changes on a shared machine hit every scenario
alike) and reported as a ratio; medians of ``--runs`` runs with min and max.

Groups (``--groups``):

- throughput: Storm's word count (N sentences x 10 words, fixed seed): local
  mode and a real cluster on this machine (ZooKeeper, nimbus, 2 supervisors,
  started through the CLI) with 1, 2 and 4 workers, unacked and acked; the
  references: bytewax single worker and 2 processes (if installed: ``pip
  install -e '.[bench]'``), and the ceiling (two processes moving the words as
  msgpack batches over ZeroMQ PUSH/PULL and nothing else);
- latency: acked complete latency p50/p99/p999 on 2 workers at 10%, 50% and
  90% of the measured maximum acked rate;
- recovery: kill -9 of a worker under load until its tasks ack again;
- memory: resident memory of an idle worker, and of every worker while a fast
  spout feeds a 100x slower bolt;
- scaling (not run by default: 12 cluster runs per round, twice the
  throughput group's cluster rows): the cluster word count on 1, 2 and 4
  workers x 1 and 2 spout tasks, unacked and acked, interleaved; words/s and
  each relative to 1 worker with 1 spout task of the same mode
  (``benchmarks/scaling.py``);
- profile (not run by default; no cluster): the local-mode word count of
  ``--profile-sentences`` sentences, unacked and acked, under cProfile: the
  share of own time by part of the code (user code, executor, routing, tuples,
  acking, framing, builtins, other) and the top 10 functions
  (``benchmarks/profile.py``, also ``python -m benchmarks.profile``);
- inference (no cluster; needs scikit-learn and skl2onnx, ``pip install -e
  '.[test]'``, to train the model): OnnxBolt on a small MLP
  with ``max_batch`` 1, 8, 64 and 256 on the CPU (and the GPU where
  onnxruntime has CUDA), local mode, acked: readings/s and p50/p99 latency
  saturated (``--inference-readings``) and paced (``--inference-rate`` for
  ``--inference-paced-seconds``), each relative to max_batch 1 and to
  ``InferenceSession.run`` on the same batches (``benchmarks/inference.py``,
  also ``python -m benchmarks.inference``);
- multilang (no cluster; needs pystorm, ``pip install -e '.[test]'``): a
  pass-through shell bolt, the protocol by hand and with pystorm, JSON and
  msgpack framing, acked and unacked, beside the same bolt in Python, local
  mode: tuples/s and the ratio to Python (``benchmarks/multilang/``, also
  ``python -m benchmarks.multilang``);
- security (not run by default: two clusters of its own): the cluster word
  count on 2 workers, unacked and acked, on a plain cluster and on one with
  ``security.enabled`` (CURVE on every socket, ZooKeeper ACLs), interleaved;
  words/s and the ratio on / off (``benchmarks/security.py``).

After the throughput table, a "targets" table gives the ratios the project
aims for, from the same run's medians (a row whose scenarios were not run is
left out): cluster-2w / best bytewax >= 1.5x, cluster-2w-acked / best bytewax
>= 1.0x, local / bytewax-1p >= 1.0x, cluster-2w-acked / cluster-2w >= 0.7x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from .wordcount import local_word_count, sentences

GROUPS = ("throughput", "latency", "recovery", "memory", "scaling", "profile", "inference", "multilang",
          "security")
DEFAULT_GROUPS = ("throughput", "latency", "recovery", "memory", "inference", "multilang")
# (throughput needs a cluster only for its cluster-* rows)
NO_CLUSTER_GROUPS = ("throughput", "profile", "inference", "multilang", "security")  # security: its own two
THROUGHPUT = ("local", "local-acked", "cluster-1w", "cluster-2w", "cluster-4w", "cluster-1w-acked",
              "cluster-2w-acked", "cluster-4w-acked", "bytewax-1p", "bytewax-2p", "zmq-ceiling")
DEFAULT_THROUGHPUT = ",".join(THROUGHPUT)
BEST_BYTEWAX = "best bytewax"
#: The "targets" table: (numerator scenario, denominator scenario or BEST_BYTEWAX, target ratio).
TARGETS = (("cluster-2w", BEST_BYTEWAX, 1.5), ("cluster-2w-acked", BEST_BYTEWAX, 1.0),
           ("local", "bytewax-1p", 1.0), ("cluster-2w-acked", "cluster-2w", 0.7))


def _bytewax_available() -> bool:
    try:
        import bytewax  # noqa: F401
    except ImportError:
        return False
    return True


def throughput(args: argparse.Namespace, cluster) -> dict[str, list[float]]:
    data = sentences(args.sentences)
    chosen = [s for s in args.scenarios.split(",") if s]
    if any(s.startswith("bytewax") for s in chosen) and not _bytewax_available():
        print("(bytewax not installed: pip install -e '.[bench]'; its rows are skipped)")
        chosen = [s for s in chosen if not s.startswith("bytewax")]
    runners: dict[str, Callable[[], float]] = {}
    for name in chosen:
        if name == "local":
            runners[name] = lambda: local_word_count(data)
        elif name == "local-acked":
            runners[name] = lambda: local_word_count(data, acked=True)
        elif name.startswith("cluster-"):
            from .cluster import cluster_word_count

            workers = int(name.split("-")[1].rstrip("w"))
            acked = name.endswith("-acked")
            runners[name] = lambda w=workers, a=acked: cluster_word_count(cluster, args.sentences, w, acked=a)
        elif name.startswith("bytewax-"):
            from .bytewax_wc import bytewax_word_count

            runners[name] = lambda p=int(name.split("-")[1].rstrip("p")): bytewax_word_count(args.sentences, p)
        elif name == "zmq-ceiling":
            from .ceiling import zmq_ceiling

            runners[name] = lambda: zmq_ceiling(args.sentences)
    results: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.runs):
        for name, run in runners.items():
            results[name].append(run())
    return results


def print_throughput(results: dict[str, list[float]], sentences_n: int, runs: int) -> dict[str, dict]:
    medians = {n: statistics.median(r) for n, r in results.items()}
    bytewax = [m for n, m in medians.items() if n.startswith("bytewax")]
    reference_name = max((n for n in medians if n.startswith("bytewax")), key=medians.get, default=None)
    ceiling = medians.get("zmq-ceiling")
    print(f"\nword count throughput: {sentences_n:,} sentences x 10 words, {runs} runs (words/s)")
    ref_label = f"vs {reference_name}" if reference_name else ""
    print(f"{'scenario':<18} {'median':>11} {'min':>11} {'max':>11} {ref_label:>18} {'vs ceiling':>11}")
    table = {}
    for name, rates in results.items():
        m = medians[name]
        vs_ref = f"{m / max(bytewax):.2f}x" if bytewax else ""
        vs_ceiling = f"{m / ceiling:.2f}x" if ceiling else ""
        print(f"{name:<18} {m:>11,.0f} {min(rates):>11,.0f} {max(rates):>11,.0f} {vs_ref:>18} {vs_ceiling:>11}")
        table[name] = {"median": m, "min": min(rates), "max": max(rates), "runs": rates,
                       "vs_bytewax_best": m / max(bytewax) if bytewax else None,
                       "vs_ceiling": m / ceiling if ceiling else None}
    return table


def ratios(results: dict[str, list[float]]) -> dict[str, dict]:
    """The target ratios of the throughput medians whose scenarios were run ("best bytewax":
    the higher bytewax median): name -> value, target, met."""
    medians = {n: statistics.median(r) for n, r in results.items()}
    bytewax = [m for n, m in medians.items() if n.startswith("bytewax")]
    if bytewax:
        medians[BEST_BYTEWAX] = max(bytewax)
    out = {}
    for numerator, denominator, target in TARGETS:
        if numerator in medians and denominator in medians:
            value = medians[numerator] / medians[denominator]
            out[f"{numerator} / {denominator}"] = {"value": value, "target": target, "met": value >= target}
    return out


def print_ratios(table: dict[str, dict]) -> None:
    if not table:
        return
    print("\ntargets (ratios of the medians above)")
    print(f"{'ratio':<34} {'value':>8} {'target':>8} {'met':>4}")
    for name, row in table.items():
        print(f"{name:<34} {row['value']:>7.2f}x {'>= ' + format(row['target'], '.1f') + 'x':>8} "
              f"{'yes' if row['met'] else 'no':>4}")


def latency(args: argparse.Namespace, cluster) -> dict:
    from .latency import complete_latency, max_acked_rate

    top = max_acked_rate(cluster, seconds=args.latency_seconds)
    table = complete_latency(cluster, top, seconds=args.latency_seconds)
    print(f"\nacked complete latency, 2 workers (max acked rate {top:,.0f} sentences/s)")
    print(f"{'load':>6} {'sentences/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'acked':>8}")
    for fraction, row in table.items():
        print(f"{fraction:>6.0%} {row['rate']:>12,.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['p999_ms']:>9.2f} {row['count']:>8,}")
    return {"max_acked_rate": top, "by_load": {str(k): v for k, v in table.items()}}


def recovery(args: argparse.Namespace, cluster) -> dict:
    from .recovery import recovery_time

    times = [recovery_time(cluster) for _ in range(args.runs)]
    print(f"\nrecovery: kill -9 of a worker under load until its tasks ack again: median "
          f"{statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")
    return {"median_s": statistics.median(times), "runs_s": times}


def memory(args: argparse.Namespace, cluster) -> dict:
    from .memory import idle_worker_rss, overload_rss

    idle = idle_worker_rss(cluster)
    over = overload_rss(cluster, seconds=args.overload_seconds)
    print(f"\nmemory: idle worker {idle:.1f} MB resident")
    print(f"fast spout into a 100x slower bolt on another worker for {args.overload_seconds:g} s "
          f"({over['processed']:,} tuples processed, {over['failed']} failed):")
    for worker, mb in over["workers"].items():
        print(f"  {worker:<14} start {mb['start_mb']:.1f} MB, end {mb['end_mb']:.1f} MB, max {mb['max_mb']:.1f} MB")
    return {"idle_worker_mb": idle, "overload": over}


def scaling(args: argparse.Namespace, cluster) -> dict:
    from .scaling import scaling as run_scaling

    return run_scaling(cluster, args.sentences, args.runs)


def profile(args: argparse.Namespace, cluster) -> dict:
    from .profile import profile as run_profile

    return run_profile(args.profile_sentences)


def inference(args: argparse.Namespace, cluster) -> dict:
    from .inference import inference as run_inference

    return run_inference(args.inference_readings, args.runs, args.inference_rate, args.inference_paced_seconds)


def multilang(args: argparse.Namespace, cluster) -> dict:
    from .multilang import multilang as run_multilang

    return run_multilang(args.multilang_tuples, args.runs)


def security(args: argparse.Namespace, cluster) -> dict:
    from .security import security_cost

    return security_cost(args.security_sentences, args.runs)


def machine() -> dict:
    import psutil

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", default=",".join(DEFAULT_GROUPS),
                    help=f"comma-separated, from: {', '.join(GROUPS)} (default: %(default)s)")
    ap.add_argument("--scenarios", default=DEFAULT_THROUGHPUT,
                    help=f"throughput rows, comma-separated, from: {', '.join(THROUGHPUT)}")
    ap.add_argument("--sentences", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-seconds", type=float, default=10)
    ap.add_argument("--overload-seconds", type=float, default=60)
    ap.add_argument("--profile-sentences", type=int, default=30_000,
                    help="sentences of the profile group's word count (default: %(default)s)")
    ap.add_argument("--inference-readings", type=int, default=20_000,
                    help="readings of each saturated run of the inference group (default: %(default)s)")
    ap.add_argument("--inference-rate", type=float, default=1000,
                    help="readings/s of the inference group's paced runs (default: %(default)s)")
    ap.add_argument("--inference-paced-seconds", type=float, default=2,
                    help="how long each paced run of the inference group emits (default: %(default)s)")
    ap.add_argument("--multilang-tuples", type=int, default=100_000,
                    help="tuples of each run of the multilang group (default: %(default)s)")
    ap.add_argument("--security-sentences", type=int, default=100_000,
                    help="sentences of each run of the security group (default: %(default)s)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/latest.json"),
                    help="write every figure here (default: %(default)s)")
    args = ap.parse_args(argv)
    groups = [g for g in args.groups.split(",") if g]
    bad = [g for g in groups if g not in GROUPS] + [s for s in args.scenarios.split(",") if s and s not in THROUGHPUT]
    if bad:
        ap.error(f"unknown group or scenario(s) {', '.join(bad)}; groups: {', '.join(GROUPS)}; "
                 f"scenarios: {', '.join(THROUGHPUT)}")
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "args": vars(args) | {
        "json": str(args.json)}}
    needs_cluster = any(g not in NO_CLUSTER_GROUPS for g in groups) or ("throughput" in groups and any(
        s.startswith("cluster-") for s in args.scenarios.split(",")))
    from .cluster import BenchCluster

    cluster = BenchCluster(supervisors=2, slots=2) if needs_cluster else None
    try:
        if cluster is not None:
            cluster.start()
        if "throughput" in groups:
            results = throughput(args, cluster)
            report["throughput"] = print_throughput(results, args.sentences, args.runs)
            report["ratios"] = ratios(results)
            print_ratios(report["ratios"])
        for name, fn in (("latency", latency), ("recovery", recovery), ("memory", memory), ("scaling", scaling),
                         ("profile", profile), ("inference", inference),
                         ("multilang", multilang), ("security", security)):
            if name in groups:
                report[name] = fn(args, cluster)
    finally:
        if cluster is not None:
            cluster.close()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\n(all figures in {args.json})")
