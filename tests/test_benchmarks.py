"""A tiny run of the benchmark suite, so it keeps working (speed is never asserted)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def bench(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_throughput_smoke_run_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "r.json"
    result = bench("--groups", "throughput", "--scenarios", "local,local-acked,cluster-2w-acked,zmq-ceiling",
                   "--sentences", "300", "--runs", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0] for line in result.stdout.splitlines() if line[:1].isalpha() and "x" in line}
    assert {"local", "local-acked", "cluster-2w-acked", "zmq-ceiling"} <= rows
    report = json.loads(out.read_text())
    assert set(report["throughput"]) == {"local", "local-acked", "cluster-2w-acked", "zmq-ceiling"}
    assert all(r["median"] > 0 for r in report["throughput"].values())
    assert report["machine"]["cpus"] >= 1


def test_latency_recovery_and_memory_smoke_run(tmp_path):
    out = tmp_path / "r.json"
    result = bench("--groups", "latency,recovery,memory", "--runs", "1", "--latency-seconds", "2",
                   "--overload-seconds", "3", "--json", str(out))
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(out.read_text())
    assert set(report["latency"]["by_load"]) == {"0.1", "0.5", "0.9"}
    assert report["recovery"]["median_s"] > 0
    assert report["memory"]["idle_worker_mb"] > 0


def test_inference_smoke_run(tmp_path):
    out = tmp_path / "r.json"
    result = bench("--groups", "inference", "--runs", "1", "--inference-readings", "600",
                   "--inference-paced-seconds", "0.2", "--json", str(out))
    assert result.returncode == 0, result.stderr + result.stdout
    cpu = json.loads(out.read_text())["inference"]["devices"]["cpu"]
    assert set(cpu["by_max_batch"]) == {"1", "8", "64", "256"}
    assert all(r["saturated"]["per_s"] > 0 and r["raw"]["per_s"] > 0 for r in cpu["by_max_batch"].values())
    assert "max_batch 64 / max_batch 1" in result.stdout


def test_multilang_smoke_run(tmp_path):
    out = tmp_path / "r.json"
    result = bench("--groups", "multilang", "--runs", "1", "--multilang-tuples", "2000", "--json", str(out))
    assert result.returncode == 0, result.stderr + result.stdout
    figures = json.loads(out.read_text())["multilang"]
    for mode in ("acked", "unacked"):
        assert set(figures[mode]) == {"python", "bare-json", "bare-msgpack", "pystorm-json", "pystorm-msgpack"}
        assert all(row["median"] > 0 for row in figures[mode].values())
    assert "target: bare-msgpack acked >= 50,000/s" in result.stdout


def test_unknown_scenario_is_a_clear_error():
    result = bench("--scenarios", "nope", timeout=60)
    assert result.returncode == 2
    assert "unknown group or scenario(s) nope" in result.stderr
