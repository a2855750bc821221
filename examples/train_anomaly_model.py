"""Train the anomaly model of examples/anomaly_scoring.py and export it to ONNX.

    python examples/train_anomaly_model.py [--out PATH]

A small MLP (scikit-learn; 4 sensor features -> the probability that a reading is
anomalous) fitted on generated readings of healthy and failing machines
(streamgale.dev.models; nothing is downloaded), exported with skl2onnx to
examples/anomaly_model.onnx (beside the topology, so `streamgale submit` ships it
in the code package). Needs scikit-learn and skl2onnx: pip install -e '.[test]'.
"""

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamgale.dev.models import sensor_readings, train_anomaly_mlp

DEFAULT = Path(__file__).resolve().parent / "anomaly_model.onnx"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT, help=f"where to write the model (default {DEFAULT})")
    args = ap.parse_args(argv)
    path = train_anomaly_mlp(args.out)
    x, y = sensor_readings(5000, seed=99)  # readings the model has not seen
    scores = ort.InferenceSession(str(path)).run(["score"], {"readings": x})[0]
    accuracy = float(np.mean((scores > 0.5) == y))
    print(f"wrote {path} ({path.stat().st_size:,} bytes); accuracy on 5,000 new readings: {accuracy:.1%}")
    return path


if __name__ == "__main__":
    main()
