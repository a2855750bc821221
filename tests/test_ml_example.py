"""The ML example runs as its docstring says: train the model, then score a stream with it
and alert on the machine that fails (examples/train_anomaly_model.py, examples/anomaly_scoring.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory):
    """The example topology beside a model trained by the example's own script."""
    d = tmp_path_factory.mktemp("anomaly")
    shutil.copy(ROOT / "examples" / "anomaly_scoring.py", d / "anomaly_scoring.py")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_anomaly_model.py"), "--out",
                          str(d / "anomaly_model.onnx")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    accuracy = float(re.search(r"accuracy on 5,000 new readings: ([\d.]+)%", out.stdout).group(1))
    assert accuracy >= 95
    return d


WINDOW = re.compile(r"window \+\s*(\d+)s (\S+)\s+mean score ([\d.]+), +([\d.]+)% of (\d+) readings anomalous( +ALERT)?")


def test_the_failing_machine_and_only_it_is_alerted_once_it_fails(example_dir):
    out = run_cli("local", str(example_dir / "anomaly_scoring.py"), "--duration", "5",
                  "-c", "machines.speedup=20", "-c", "machines.fail_after=30")
    assert out.returncode == 0, out.stderr
    windows = [(int(m[1]), m[2], float(m[4]), bool(m[6])) for m in WINDOW.finditer(out.stdout)]
    complete = [w for w in windows if w[0] + 10 <= 30 or w[0] >= 30]  # not the window it starts failing in
    assert {w[1] for w in windows} == {"lathe-1", "lathe-2", "press-3", "press-4", "mill-5", "mill-6"}
    alerted = {(start, machine) for start, machine, _, alert in complete if alert}
    assert alerted == {(start, "press-3") for start, machine, _, _ in complete if machine == "press-3" and start >= 30}
    assert any(start >= 30 for start, _ in alerted)  # it failed and was caught
    assert all(share == 0.0 for start, machine, share, _ in complete if machine != "press-3" or start < 30)


def test_without_its_model_the_example_says_to_train_it_first(tmp_path):
    shutil.copy(ROOT / "examples" / "anomaly_scoring.py", tmp_path / "anomaly_scoring.py")
    out = run_cli("local", str(tmp_path / "anomaly_scoring.py"), "--duration", "1")
    assert out.returncode == 2
    assert ("the anomaly model anomaly_model.onnx is missing beside anomaly_scoring.py: train it first with "
            "`python examples/train_anomaly_model.py`") in out.stderr
