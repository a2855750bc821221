"""Multi-lang components on a real 2-supervisor cluster (docs/multilang.md): the example word
count, a pystorm spout and bolt written for Apache Storm, a Node.js bolt and a Java bolt, shipped
in the code package; every sentence acked; a shell subprocess killed with kill -9 mid-run is
reported, restarted, and what it held replays from the pystorm spout, nothing lost."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter

import psutil
import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT

from streamgale.runtime.loader import load_module

pytestmark = pytest.mark.slow

SENTENCES = 20_000
EXAMPLE = ROOT / "examples" / "multilang"


def spout_totals(cluster) -> dict:
    stats = json.loads(cluster.cli("stats", "multilang-word-count", "--json").stdout)
    # {"acked": 0} until the spout's worker has reported its first metrics
    return stats["components"].get("sentences", {}).get("windows", {}).get("all", {"acked": 0})


def subprocesses(cluster, script: str) -> list[psutil.Process]:
    """The live subprocesses of the cluster's workers whose command line names ``script``."""
    found = []
    for worker in cluster.worker_processes():
        for child in worker.children():
            try:
                if any(script in part for part in child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
    return found


def latest_counts(path) -> dict[str, int]:
    latest: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():  # a line being written may be cut short
                latest[parts[0]] = max(latest.get(parts[0], 0), int(parts[1]))
    return latest


def test_the_multilang_word_count_on_a_cluster_survives_a_killed_subprocess(cluster, tmp_path):
    code = tmp_path / "code"
    shutil.copytree(EXAMPLE, code, ignore=shutil.ignore_patterns("*.class"))
    subprocess.run(["javac", "WordCount.java"], cwd=code, check=True)
    out = tmp_path / "counts.txt"
    result = cluster.cli("submit", str(code / "word_count.py"), "-c", f"multilang.sentences={SENTENCES}",
                         "-c", f"multilang.output={out}", "-c", "topology.message_timeout=60")
    assert result.returncode == 0, result.stderr + cluster.logs()

    # Every component's subprocesses run, inside the workers: 1 spout, 2 split, 1 lower, 2 count.
    cluster.wait(lambda: len(subprocesses(cluster, "split.js")) == 2 and len(subprocesses(cluster, "WordCount")) == 2
                 and len(subprocesses(cluster, "sentences.py")) == 1 and len(subprocesses(cluster, "lower.py")) == 1,
                 timeout=90, message="every shell subprocess started")
    cluster.wait(lambda: spout_totals(cluster)["acked"] >= 1000, timeout=90, message="sentences flowing")
    victim = subprocesses(cluster, "split.js")[0]
    victim.kill()  # kill -9 a Node.js bolt mid-run
    cluster.wait(lambda: len(subprocesses(cluster, "split.js")) == 2 and victim.pid not in
                 {p.pid for p in subprocesses(cluster, "split.js")}, timeout=60, message="split.js restarted")

    # Everything is acked in the end: the trees the killed process held failed and were replayed.
    totals = cluster.wait(lambda: (lambda t: t if t["acked"] >= SENTENCES else None)(spout_totals(cluster)),
                          timeout=180, message="every sentence acked")
    assert totals["acked"] == SENTENCES
    info = json.loads(cluster.cli("info", "multilang-word-count").stdout)
    reports = [e["message"] for e in info["errors"].get("split", [])]
    assert any(f"(pid {victim.pid}) was killed by signal SIGKILL" in r and "restarting it in" in r for r in reports)

    # Every word counted at least as often as the sentences hold it (a replayed sentence counts
    # again: at least once), exactly so if nothing failed.
    sentences = load_module(EXAMPLE / "sentences.py").SENTENCES
    expected = Counter(w.lower() for i in range(SENTENCES) for w in sentences[i % 5].split())
    counts = cluster.wait(lambda: (lambda c: c if set(c) == set(expected) and all(
        c[w] >= n for w, n in expected.items()) else None)(latest_counts(out)), timeout=60, message="counts complete")
    if totals["failed"] == 0:
        assert counts == dict(expected)
    cluster.cli("kill", "multilang-word-count", "-w", "0")
    cluster.wait(lambda: not subprocesses(cluster, "split.js") and not subprocesses(cluster, "WordCount"),
                 timeout=60, message="the subprocesses ended with their workers")
