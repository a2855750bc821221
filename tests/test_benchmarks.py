"""A tiny run of the benchmark suite, so it keeps working (speed is never asserted)."""

import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_benchmark_smoke_run_prints_the_table():
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--sentences", "300", "--runs", "1",
                             "--scenarios", "cluster-2w"], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"local", "cluster-2w"}
    assert rows["local"][-1] == "1.00x"
    assert float(rows["cluster-2w"][1].replace(",", "")) > 0


def test_unknown_scenario_is_a_clear_error():
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--scenarios", "nope"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "unknown scenario(s) nope; choose from local, cluster-1w, cluster-2w, cluster-4w" in result.stderr
