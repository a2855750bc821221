"""Model bolts on a real 2-supervisor cluster (docs/ml.md): the model ships in the code
package; every reading's prediction equals onnxruntime's own; a model update under load
switches every task between batches and fails nothing, and a worker killed after it comes back
serving the new version; corrupt updates are refused, by the
CLI before upload and by the workers after it, and the serving model goes on."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import onnxruntime as ort
import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT

from streamgale.dev.models import sensor_readings, train_anomaly_mlp

pytestmark = pytest.mark.slow

COUNT = 6000


def recorded(out) -> list[tuple[int, int, int, float]]:
    rows = []
    for f in out.glob("record-*.txt"):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:  # a line being written may be cut short
                rows.append((int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])))
    return rows


def spout_totals(cluster) -> dict:
    stats = cluster.cli("stats", "inference", "--json")
    return json.loads(stats.stdout)["components"]["readings"]["windows"]["all"]


def test_predictions_equal_onnxruntime_and_an_update_under_load_fails_nothing(cluster, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(ROOT / "tests" / "topologies" / "inference.py", code / "inference.py")
    v1 = train_anomaly_mlp(code / "model.onnx", hidden=(16,), samples=1500, seed=1)
    v2 = train_anomaly_mlp(tmp_path / "v2.onnx", hidden=(8, 8), samples=1500, seed=2)
    readings = sensor_readings(COUNT, seed=11)[0]
    expected = {version: ort.InferenceSession(str(path)).run(["score"], {"readings": readings})[0]
                for version, path in ((1, v1), (2, v2))}
    out = tmp_path / "out"
    result = cluster.cli("submit", str(code / "inference.py"), "-c", f"test.output_dir={out}",
                         "-c", f"test.count={COUNT}", "-c", "test.rate=1000",
                         "-c", "topology.message_timeout=10")
    assert result.returncode == 0, result.stderr + cluster.logs()

    cluster.wait(lambda: len(recorded(out)) >= 1500, timeout=90, message="a quarter scored by version 1")
    updated = cluster.cli("model", "update", "inference", "score", str(v2), "--wait", "60", timeout=90)
    assert updated.returncode == 0, updated.stderr + cluster.logs()
    assert "uploaded" in updated.stdout and "as version 2" in updated.stdout
    assert "all 2 task(s) of 'score' serve version 2" in updated.stdout

    # Nothing failed across the update: once the spout's metrics cover what was recorded by now.
    scored = len(recorded(out))
    spout = cluster.wait(lambda: (lambda w: w if w["acked"] >= scored else None)(
        spout_totals(cluster)), timeout=30, message="metrics caught up")
    assert spout["failed"] == 0

    # A worker killed after the update comes back serving version 2, not the file in the code.
    victim = cluster.worker_processes()[0]
    victim.kill()
    cluster.wait(lambda: len(cluster.worker_processes()) == 2 and victim.pid not in
                 {p.pid for p in cluster.worker_processes()}, timeout=60, message="the killed worker restarted")

    # Refused by the CLI: an .onnx file that does not load never leaves this machine.
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(v2.read_bytes()[:300])
    refused = cluster.cli("model", "update", "inference", "score", str(truncated))
    assert refused.returncode == 2
    assert f"error: model file {truncated} is not a model ONNX Runtime can load" in refused.stderr
    assert "the running model keeps serving" in refused.stderr
    # Refused by the workers: a file the CLI cannot check (no .onnx suffix) that does not load.
    garbage = tmp_path / "model-v3.bin"
    garbage.write_bytes(b"\x08\x07 this is not a model")
    rejected = cluster.cli("model", "update", "inference", "score", str(garbage), "--wait", "60", timeout=90)
    assert rejected.returncode == 1, rejected.stdout + rejected.stderr
    assert "as version 3" in rejected.stdout
    assert "error: a task refused version 3: ModelError: model file" in rejected.stderr
    assert "is not a model ONNX Runtime can load" in rejected.stderr

    cluster.wait(lambda: {r[0] for r in recorded(out)} >= set(range(COUNT)), timeout=120,
                 message="every reading scored")
    rows = recorded(out)
    by_id = defaultdict(set)
    for i, _, version, score in rows:
        by_id[i].add((version, score))
    assert sorted(by_id) == list(range(COUNT))
    # Every prediction is the one that version of the model gives for that reading, matched by id
    # (to float32 precision: batches of other sizes may change the last bits).
    assert all(score == pytest.approx(float(expected[version][i]), rel=1e-5, abs=1e-6)
               for i, scored in by_id.items() for version, score in scored)
    # Per scoring task, in the order a recording task received its outputs (one channel keeps
    # order): version 1, then version 2 from one batch on, never back, never the refused 3.
    for f in out.glob("record-*.txt"):
        per_task = defaultdict(list)
        for line in f.read_text().splitlines():
            _, task, version = map(int, line.split()[:3])
            per_task[task].append(version)
        for versions in per_task.values():
            assert versions == sorted(versions) and set(versions) <= {1, 2}
    assert {r[2] for r in rows} == {1, 2}
    stats = cluster.cli("stats", "inference", "--json")
    data = json.loads(stats.stdout)
    # Only the trees the killed worker held failed (timed out and replayed); the update failed none.
    assert data["components"]["readings"]["windows"]["all"]["failed"] <= 500

    def versions():
        stats = json.loads(cluster.cli("stats", "inference", "--json").stdout)
        return {stats["tasks"][str(t)]["metrics"].get("model_version") for t in stats["components"]["score"]["tasks"]}
    cluster.wait(lambda: versions() == {2}, timeout=30, message="every task reports version 2")
    cluster.cli("kill", "inference", "-w", "0")
