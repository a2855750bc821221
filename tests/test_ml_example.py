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


def test_every_reading_is_scored_and_acked(example_dir, capsys):
    """In-process, as `streamgale local` loads it: every reading of the first 60 simulated seconds
    is scored, counted in its machine's window and acked at the spout, none fails, and the
    alerts name press-3 from the second it fails (30 s) on, and no other machine."""
    from streamgale import LocalCluster
    from streamgale.config import Config
    from streamgale.runtime.loader import load_topology

    config = Config().merged({"machines.speedup": 20, "machines.fail_after": 30}, "test")
    topology = load_topology(example_dir / "anomaly_scoring.py", config)  # base_dir: the model's directory
    cluster = LocalCluster(topology, config)
    instances = [r.instance for e in cluster.loop.spouts + cluster.loop.bolts for r in e.runners]
    [spout] = [i for i in instances if type(i).__name__ == "Machines"]
    scorers = [i for i in instances if type(i).__name__ == "OnnxBolt"]
    example = sys.modules["anomaly_scoring"]
    until = example.START + 60  # every reading stamped before this must be acked

    def done():
        if example.START + spout.rounds * example.EVERY <= until:
            return False
        oldest = spout.oldest_pending()
        return oldest is None or oldest >= until

    run = cluster.run(duration=60, until=done)
    assert not run.errors, run.errors
    assert done(), f"readings before +60s still in flight after {run.seconds:.1f} s"
    assert spout.failed == 0
    assert spout.acked >= 600 * 6  # ten readings a simulated second from each of six machines
    assert sum(s.stats["inferred"] for s in scorers) >= spout.acked
    assert all(s.stats["bad_tuples"] == s.stats["inference_errors"] == 0 for s in scorers)

    windows = [(int(m[1]), m[2], float(m[4]), int(m[5]), bool(m[6])) for m in WINDOW.finditer(capsys.readouterr().out)]
    closed = [w for w in windows if w[0] < 60]  # the windows of [0, 60): their readings were all acked
    assert sorted((start, machine) for start, machine, *_ in closed) == sorted(
        (start, machine) for start in range(0, 60, 10) for machine in example.MACHINES)
    assert all(n == 100 for *_, n, _ in closed)  # every reading scored, each in one window
    assert {(start, machine) for start, machine, _, _, alert in closed if alert} == {
        (start, "press-3") for start in (30, 40, 50)}
    assert all(share == 0.0 for start, machine, share, _, _ in closed if machine != "press-3" or start < 30)


def test_without_its_model_the_example_says_to_train_it_first(tmp_path):
    shutil.copy(ROOT / "examples" / "anomaly_scoring.py", tmp_path / "anomaly_scoring.py")
    out = run_cli("local", str(tmp_path / "anomaly_scoring.py"), "--duration", "1")
    assert out.returncode == 2
    assert ("the anomaly model anomaly_model.onnx is missing beside anomaly_scoring.py: train it first with "
            "`python examples/train_anomaly_model.py`") in out.stderr
