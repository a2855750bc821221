"""Small models built on the spot, for the tests, the benchmarks and the ML example: nothing is
downloaded. Needs scikit-learn and skl2onnx (``pip install 'streamgale[test]'``).

:func:`sensor_readings` generates sensor data with anomalies; :func:`train_anomaly_mlp` fits a
small MLP classifier (anomaly probability) on it and writes it to an ONNX file whose input
``readings`` is float32[?, FEATURES] and whose output ``score`` is float32[?] (the anomaly
probability), so a model bolt can emit it as a plain number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURES = ("temperature", "humidity", "vibration", "current")


def sensor_readings(n: int, seed: int = 0, anomaly_rate: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``n`` readings (float32[n, 4]) and labels (1: anomalous). Normal machines run near 60 C,
    40 % humidity, low vibration and 5 A; an anomaly is hot, shaking and drawing current."""
    rng = np.random.default_rng(seed)
    normal = rng.normal([60.0, 40.0, 0.2, 5.0], [3.0, 5.0, 0.05, 0.5], size=(n, 4))
    labels = rng.random(n) < anomaly_rate
    shift = rng.normal([15.0, 0.0, 0.6, 2.5], [4.0, 3.0, 0.2, 0.8], size=(n, 4))
    readings = normal + shift * labels[:, None]
    return readings.astype(np.float32), labels.astype(np.int64)


def train_anomaly_mlp(path: str | Path, hidden: tuple[int, ...] = (32, 32), samples: int = 4000,
                      seed: int = 0) -> Path:
    """Fit the anomaly MLP (standardised inputs) and export it to ``path`` as ONNX; returns the path."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = sensor_readings(samples, seed)
    model = make_pipeline(StandardScaler(), MLPClassifier(hidden, max_iter=300, random_state=seed))
    model.fit(x, y)
    return export_probability(model, path)


def export_probability(model: object, path: str | Path) -> Path:
    """Export a fitted scikit-learn classifier to ONNX with one output, ``score``: the probability
    of class 1 (float32[?])."""
    import onnx
    from onnx import helper
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(model, initial_types=[("readings", FloatTensorType([None, len(FEATURES)]))],
                  options={id(model): {"zipmap": False}}, target_opset=17)
    graph = onx.graph
    probabilities = "probabilities"  # skl2onnx's output for a classifier without zipmap
    if probabilities not in {o.name for o in graph.output}:
        raise ValueError(f"{type(model).__name__} exported no '{probabilities}' output")
    # score = probabilities[:, 1]
    graph.node.extend([
        helper.make_node("Constant", [], ["score_index"], value=helper.make_tensor("i", onnx.TensorProto.INT64,
                                                                                    [], [1])),
        helper.make_node("Gather", [probabilities, "score_index"], ["score"], axis=1),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, [None]))
    onnx.checker.check_model(onx)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    return path
