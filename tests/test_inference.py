"""Model bolts in local mode, against ONNX Runtime and PyTorch themselves (docs/ml.md).

Every prediction is compared with the runtime's own on the same inputs; counts are exact;
errors are asserted by their text. Models are trained here (streamgale.dev.models), never
downloaded.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest

from streamgale import Bolt, Spout, Topology
from streamgale.config import Config
from streamgale.dev.models import FEATURES, sensor_readings, train_anomaly_mlp
from streamgale.inference import ModelBolt, ModelError, OnnxBolt, TensorSpec, TorchBolt
from streamgale.inference.plan import plan
from streamgale.local import LocalCluster
from streamgale.topology import TopologyError

READINGS, _ = sensor_readings(3000, seed=11)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"v1": train_anomaly_mlp(d / "v1.onnx", hidden=(16,), samples=1500, seed=1),
            "v2": train_anomaly_mlp(d / "v2.onnx", hidden=(8, 8), samples=1500, seed=2)}


def reference(path, readings=READINGS) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(["score"], {"readings": readings})[0]


class Readings(Spout):
    """Emits READINGS[0:count] (id, the four features), tracked; counts acks and fails. With
    ``paced``, one tuple a turn after ``hold`` has been set (a stream under load that lasts)."""

    outputs = ["id", *FEATURES]
    count = len(READINGS)
    acked: set = set()
    failed: list = []
    hold: threading.Event | None = None

    def open(self, context):
        self.i = 0

    def next_tuple(self):
        if self.i < self.count and (self.hold is None or not self.hold.is_set()):
            self.emit([self.i, *map(float, READINGS[self.i])], msg_id=self.i)
            self.i += 1

    def ack(self, msg_id):
        type(self).acked.add(msg_id)

    def fail(self, msg_id):
        type(self).failed.append(msg_id)


class Collect(Bolt):
    got: list = []

    def process(self, tup):
        type(self).got.append(tuple(tup.values))


def spout_class(count=len(READINGS)):
    return type("Src", (Readings,), {"count": count, "acked": set(), "failed": []})


def sink_class():
    return type("Sink", (Collect,), {"got": []})


def topology(bolt, spout, sink, parallelism=1):
    t = Topology("ml")
    t.spout("src", spout)
    t.bolt("score", bolt, parallelism=parallelism).shuffle("src")
    t.bolt("sink", sink).shuffle("score")
    return t


def scorer(path, **settings):
    return OnnxBolt(model=str(path), feeds={"readings": list(FEATURES)}, outputs=["id", "score"], **settings)


def run(t, until, config=None, timeout=60):
    lc = LocalCluster(t, config or Config())
    result = lc.run(until=until, duration=timeout)
    return lc, result


def assert_scores(got, expected, ids):
    """Every id scored once, each score the reference's to float32 precision: a batch of another
    size takes another BLAS path, which may change the last bits."""
    got = sorted(got)
    assert [row[0] for row in got] == list(ids)
    assert [row[-1] for row in got] == pytest.approx([float(expected[i]) for i in ids], rel=1e-5, abs=1e-6)


def score_task(lc):
    return next(r.instance for e in lc.executors if e.component == "score" for r in e.runners)


# -- predictions ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_batch", [1, 64, 256])
def test_every_prediction_equals_onnxruntime_and_every_reading_is_acked(models, max_batch):
    src, sink = spout_class(), sink_class()
    lc, result = run(topology(scorer(models["v1"], max_batch=max_batch), src, sink, parallelism=2),
                     lambda: len(src.acked) == len(READINGS))
    assert result.errors == []
    assert src.acked == set(range(len(READINGS))) and src.failed == []
    expected = reference(models["v1"])
    assert_scores(sink.got, expected, range(len(READINGS)))
    sizes = [score_task(lc).counters()["batch_size_max"]]
    assert max(sizes) <= max_batch


def test_a_partial_batch_closes_after_max_wait(models):
    src, sink = spout_class(count=3), sink_class()
    lc, result = run(topology(scorer(models["v1"], max_batch=64, max_wait=0.05), src, sink),
                     lambda: len(src.acked) == 3)
    assert src.acked == {0, 1, 2} and result.errors == []
    c = score_task(lc).counters()
    assert c["batch_size_max"] <= 3 and c["inferred"] == 3
    assert c["queue_wait_ms_p99"] >= 40  # the batch waited for more tuples, up to max_wait


def test_passthrough_fields_and_the_model_version_field(models):
    src, sink = spout_class(count=10), sink_class()
    bolt = OnnxBolt(model=str(models["v1"]), feeds={"readings": list(FEATURES)},
                    outputs=["id", "temperature", "anomaly", "model_version"], predictions={"anomaly": "score"})
    run(topology(bolt, src, sink), lambda: len(src.acked) == 10)
    expected = reference(models["v1"])
    got = sorted(sink.got)
    assert [(i, t, v) for i, t, _, v in got] == [(i, float(READINGS[i][0]), 1) for i in range(10)]
    assert_scores([(i, score) for i, _, score, _ in got], expected, range(10))


def test_the_model_is_loaded_once_per_process_for_all_tasks(models):
    src, sink = spout_class(count=100), sink_class()
    lc = LocalCluster(topology(scorer(models["v1"]), src, sink, parallelism=4), Config())
    lc.run(until=lambda: len(src.acked) == 100, duration=30)
    tasks = [r.instance for e in lc.executors if e.component == "score" for r in e.runners]
    assert len(tasks) == 4 and len({id(t.serving.model) for t in tasks}) == 1


# -- bad input --------------------------------------------------------------------------------


class Mixed(Readings):
    """Every tenth reading carries a string where a number belongs."""

    def next_tuple(self):
        if self.i < self.count:
            values = [float(v) for v in READINGS[self.i]]
            if self.i % 10 == 3:
                values[1] = "n/a"
            self.emit([self.i, *values], msg_id=self.i)
            self.i += 1


def test_a_tuple_the_model_cannot_take_fails_alone_and_is_reported(models):
    src = type("Src", (Mixed,), {"count": 200, "acked": set(), "failed": []})
    sink = sink_class()
    lc, result = run(topology(scorer(models["v1"], max_batch=32), src, sink),
                     lambda: len(src.acked) + len(src.failed) == 200)
    bad = {i for i in range(200) if i % 10 == 3}
    assert set(src.failed) == bad and src.acked == set(range(200)) - bad
    expected = reference(models["v1"])
    assert_scores(sink.got, expected, sorted(set(range(200)) - bad))
    assert result.errors and all(e.component == "score" for e in result.errors)
    assert ("fields temperature, humidity, vibration, current of a tuple from 'src' hold [" in str(result.errors[0].error)
            and "which is not float32 data for model input readings: float32[?, 4]" in str(result.errors[0].error))
    assert score_task(lc).counters()["bad_tuples"] == 20


class Flaky:
    """A model whose every batch containing id 7 raises."""

    path, digest = "flaky", "f" * 64
    inputs = (TensorSpec("id", "int64", (None,)),)
    outputs = (TensorSpec("double", "int64", (None,)),)

    def run(self, arrays):
        if 7 in arrays["id"]:
            raise RuntimeError("the accelerator fell over")
        return {"double": arrays["id"] * 2}


class FlakyBolt(ModelBolt):
    model = __file__  # any readable file: the "model" is Flaky
    feeds = {"id": "id"}
    outputs = ["id", "double"]
    max_batch = 4
    max_wait = 0.0

    def load(self, path, data, context):
        return Flaky()


def test_an_inference_error_fails_its_batch_only_and_the_task_goes_on():
    src, sink = spout_class(count=40), sink_class()
    lc, result = run(topology(FlakyBolt, src, sink), lambda: len(src.acked) + len(src.failed) == 40)
    assert 7 in src.failed and 1 <= len(src.failed) <= 4  # the batch holding 7, at most max_batch
    assert src.acked == set(range(40)) - set(src.failed)
    assert sorted(sink.got) == [(i, 2 * i) for i in sorted(src.acked)]
    assert "inference of a batch of" in result.errors[0].details
    assert str(result.errors[0].error) == "the accelerator fell over"


def test_a_missing_model_file_fails_before_the_run_naming_the_file(tmp_path):
    t = topology(OnnxBolt(model="nowhere.onnx", feeds={"readings": list(FEATURES)}, outputs=["id", "score"]),
                 spout_class(), sink_class())
    t.base_dir = str(tmp_path)
    with pytest.raises(TopologyError, match=rf"model file {tmp_path}/nowhere.onnx does not exist \(model = "
                                         r"'nowhere.onnx', read relative to .*\); put the file in the topology's"):
        LocalCluster(t, Config()).run(duration=5)


def test_a_corrupt_model_file_fails_before_the_run(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not a protobuf at all")
    t = topology(scorer(bad), spout_class(), sink_class())
    with pytest.raises(TopologyError, match=rf"model file {bad} is not a model ONNX Runtime can load"):
        LocalCluster(t, Config()).run(duration=5)


def test_feeding_three_fields_to_a_four_wide_input_fails_before_the_run(models):
    bolt = OnnxBolt(model=str(models["v1"]), feeds={"readings": ["temperature", "humidity", "vibration"]},
                    outputs=["id", "score"])
    with pytest.raises(TopologyError, match=r"bolt 'score': model input readings: float32\[\?, 4\] of model .* is fed "
                                         r"from 3 fields \(temperature, humidity, vibration\), one value each, which "
                                         r"makes rows of shape \[3\]; the model takes rows of shape \[4\]"):
        LocalCluster(topology(bolt, spout_class(), sink_class()), Config()).run(duration=5)


def test_asking_for_the_cuda_provider_where_there_is_none_says_so(models):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    config = Config().merged({"topology.inference.providers": ["CUDAExecutionProvider"]}, "test")
    with pytest.raises(TopologyError, match="execution provider CUDAExecutionProvider is not available on this machine "
                                         r"\(the CUDA provider needs the onnxruntime-gpu package and a CUDA GPU\); "
                                         "available: .*CPUExecutionProvider"):
        LocalCluster(topology(scorer(models["v1"]), spout_class(), sink_class()), config).run(duration=5)


def test_fields_the_input_streams_lack_fail_before_the_run(models):
    bolt = OnnxBolt(model=str(models["v1"]), feeds={"readings": ["temperature", "humidity", "vibration", "amps"]},
                    outputs=["id", "score"])
    with pytest.raises(TopologyError, match=r"bolt 'score': field 'amps' feeds model input readings: "
                                            r"float32\[\?, 4\], but stream 'default' of 'src' has no field 'amps' "
                                            r"\(its fields: id, temperature, humidity, vibration, current\)"):
        LocalCluster(topology(bolt, spout_class(), sink_class()), Config())
    bolt = OnnxBolt(model=str(models["v1"]), feeds={"readings": list(FEATURES)}, outputs=["id", "site", "score"])
    with pytest.raises(TopologyError, match=r"output field 'site' is not a prediction, so it is copied from the "
                                            r"input, but stream 'default' of 'src' has no field 'site'"):
        LocalCluster(topology(bolt, spout_class(), sink_class()), Config())


def test_mapping_errors_name_the_field_the_input_and_what_it_expected():
    x = TensorSpec("x", "float32", (None, 4))
    y = TensorSpec("y", "float32", (None,))
    with pytest.raises(ModelError, match=r"model input x: float32\[\?, 4\] of m is fed by no field; add 'x'"):
        plan("b", [x], [y], {}, {}, ["y"], 8, "m")
    with pytest.raises(ModelError, match=r"feeds names model input 'z', which m does not have; its inputs are "
                                         r"x: float32\[\?, 4\]"):
        plan("b", [x], [y], {"x": "f", "z": "g"}, {}, ["y"], 8, "m")
    with pytest.raises(ModelError, match=r"has a fixed batch dimension of 1, but max_batch is 8; export the model "
                                         r"with a dynamic first dimension"):
        plan("b", [TensorSpec("x", "float32", (1, 4))], [y], {"x": "f"}, {}, ["y"], 8, "m")
    with pytest.raises(ModelError, match=r"predictions maps field 'p' to model output 'q', which m does not have; "
                                         r"its outputs are y: float32\[\?\]"):
        plan("b", [x], [y], {"x": "f"}, {"p": "q"}, ["p"], 8, "m")
    with pytest.raises(ModelError, match=r"none of the output fields \['id'\] is named like an output of m"):
        plan("b", [x], [y], {"x": "f"}, {}, ["id"], 8, "m")
    assert plan("b", [x], [y], {"x": "f"}, {}, ["id", "y"], 8, "m").predictions == {"y": "y"}


def test_bad_knobs_are_refused_with_the_rule():
    with pytest.raises(ModelError, match="OnnxBolt: max_batch must be an integer >= 1, got 0"):
        OnnxBolt(max_batch=0)
    with pytest.raises(TypeError, match="OnnxBolt takes no setting 'batch'; its settings are model, feeds"):
        OnnxBolt(batch=3)


# -- backpressure -----------------------------------------------------------------------------


class Slow(Flaky):
    def run(self, arrays):
        gate.wait(30)
        return {"double": arrays["id"] * 2}


gate = threading.Event()


class SlowBolt(FlakyBolt):
    max_batch = 8
    max_inflight = 2

    def load(self, path, data, context):
        return Slow()


def test_a_bolt_whose_inference_is_behind_takes_no_more_input():
    gate.clear()
    src, sink = spout_class(count=2000), sink_class()
    config = Config().merged({"topology.max_spout_pending": 5000, "topology.queue_size": 64}, "test")
    lc = LocalCluster(topology(SlowBolt, src, sink), config)
    inside = []

    def until():
        task = score_task(lc)
        inside.append(getattr(task, "inside", 0))
        if len(inside) == 2000:
            gate.set()  # inference catches up: everything flows
        return len(src.acked) == 2000

    result = lc.run(until=until, duration=60)
    assert result.errors == [] and src.acked == set(range(2000))
    # While inference was stuck the bolt held at most max_batch * max_inflight tuples, plus one turn's
    # worth taken before it looked again; the rest waited in its queue and the spout stopped.
    assert max(inside[:2000]) <= 16 + 256


# -- live model updates -----------------------------------------------------------------------


def versioned(path):
    return OnnxBolt(model=str(path), feeds={"readings": list(FEATURES)}, outputs=["id", "score", "model_version"],
                    max_batch=16)


def test_a_model_update_under_load_switches_between_batches_and_fails_nothing(models):
    src, sink = type("Src", (Readings,), {"count": len(READINGS), "acked": set(), "failed": []}), sink_class()
    lc = LocalCluster(topology(versioned(models["v1"]), src, sink), Config())
    updated = []

    def until():
        if not updated and len(sink.got) >= 500:
            updated.append(lc.update_model("score", str(models["v2"])))
        return len(src.acked) == len(READINGS)

    result = lc.run(until=until, duration=60)
    assert updated == [2] and result.errors == [] and src.failed == []
    versions = [v for _, _, v in sink.got]
    switch = versions.index(2)
    assert 500 <= switch < len(versions) and set(versions[switch:]) == {2}  # never back to 1
    v1, v2 = reference(models["v1"]), reference(models["v2"])
    assert all(score == pytest.approx(float((v1 if v == 1 else v2)[i]), rel=1e-5, abs=1e-6) for i, score, v in sink.got)
    assert score_task(lc).counters()["model_version"] == 2


def test_a_corrupt_model_update_is_refused_and_the_old_model_keeps_serving(models, tmp_path):
    corrupt = tmp_path / "v2.onnx"
    corrupt.write_bytes(models["v2"].read_bytes()[:200])  # truncated in transit
    src, sink = spout_class(), sink_class()
    lc = LocalCluster(topology(versioned(models["v1"]), src, sink), Config())
    updated = []

    def until():
        if not updated and len(sink.got) >= 500:
            updated.append(lc.update_model("score", str(corrupt)))
        return len(src.acked) == len(READINGS) and bool(lc.errors)

    result = lc.run(until=until, duration=60)
    assert src.failed == [] and {v for _, _, v in sink.got} == {1}
    assert len(result.errors) == 1
    assert result.errors[0].details.startswith("bolt 'score' task 1 refused model version 2; version 1 keeps serving")
    assert f"model file {corrupt} is not a model ONNX Runtime can load" in str(result.errors[0].error)
    c = score_task(lc).counters()
    assert c["model_version"] == 1 and c["model_updates_refused"] == 1


def test_a_model_update_that_does_not_fit_the_bolt_is_refused(models, tmp_path):
    import onnx
    from onnx import helper

    narrow = tmp_path / "narrow.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["readings"], ["score"])], "g",
                              [helper.make_tensor_value_info("readings", onnx.TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, [None, 3])])
    narrow.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    src, sink = spout_class(count=300), sink_class()
    lc = LocalCluster(topology(versioned(models["v1"]), src, sink), Config())
    updated = []

    def until():
        if not updated and len(sink.got) >= 100:
            updated.append(lc.update_model("score", str(narrow)))
        return len(src.acked) == 300 and bool(lc.errors)

    result = lc.run(until=until, duration=60)
    assert {v for _, _, v in sink.got} == {1} and src.failed == []
    assert "takes rows of shape [3]" in str(result.errors[0].error)
    with pytest.raises(ValueError, match="has no model bolt named 'sink' \\(its model bolts: score\\)"):
        lc.update_model("sink", str(narrow))


# -- PyTorch ----------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

    def forward(self, x):
        return torch.sigmoid(self.net((x - 50.0) / 20.0)).squeeze(1)


class TorchScorer(TorchBolt):
    feeds = {"x": list(FEATURES)}
    inputs = {"x": ("float32", (None, 4))}
    output_names = ["score"]
    outputs = ["id", "score"]


class EagerScorer(TorchScorer):
    def build(self):
        return Mlp()


def torch_reference(module):
    with torch.inference_mode():
        return module(torch.from_numpy(READINGS)).numpy()


@pytest.mark.parametrize("kind", ["export", "torchscript", "state_dict"])
def test_torch_predictions_equal_torch_itself(tmp_path, kind):
    torch.manual_seed(0)
    module = Mlp().eval()
    path = tmp_path / "m.pt"
    if kind == "export":
        path = tmp_path / "m.pt2"
        program = torch.export.export(module, (torch.zeros(2, 4),),
                                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
        torch.export.save(program, str(path))
        bolt = TorchScorer(model=str(path))
    elif kind == "torchscript":
        torch.jit.save(torch.jit.script(module), str(path))
        bolt = TorchScorer(model=str(path))
    else:
        torch.save(module.state_dict(), str(path))
        bolt = EagerScorer(model=str(path))
    src, sink = spout_class(count=1000), sink_class()
    _, result = run(topology(bolt, src, sink), lambda: len(src.acked) == 1000)
    assert result.errors == [] and src.failed == []
    expected = torch_reference(module)
    assert_scores(sink.got, expected, range(1000))


def test_a_torch_file_that_is_not_torchscript_is_refused_with_what_it_expected(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(TopologyError, match=rf"model file {path} is not a TorchScript file \(torch.jit.save\)"):
        LocalCluster(topology(TorchScorer(model=str(path)), spout_class(), sink_class()), Config()).run(duration=5)


# -- submit -----------------------------------------------------------------------------------


def test_submit_refuses_a_model_bolt_whose_model_does_not_fit_before_uploading(models, tmp_path):
    from streamgale.client import prepare
    from streamgale.topology import TopologyError

    (tmp_path / "model.onnx").write_bytes(models["v1"].read_bytes())
    (tmp_path / "scoring.py").write_text(
        "from streamgale import Topology\n"
        "from streamgale.inference import OnnxBolt\n"
        "from test_inference import Readings, Collect\n"
        "topology = Topology('scoring')\n"
        "topology.spout('src', Readings)\n"
        "topology.bolt('score', OnnxBolt(model='model.onnx', feeds={'readings': ['temperature', 'humidity']},\n"
        "              outputs=['id', 'score'])).shuffle('src')\n")
    with pytest.raises(TopologyError, match=r"bolt 'score': model input readings: float32\[\?, 4\] of model "
                                            r"model.onnx \(version 1\) is fed from 2 fields"):
        prepare(str(tmp_path / "scoring.py"), base=Config())
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(TopologyError, match=rf"model file {tmp_path}/model.onnx does not exist"):
        prepare(str(tmp_path / "scoring.py"), base=Config())


def test_streamgale_local_reports_a_missing_model_as_one_error_line(tmp_path):
    from conftest import run_cli

    (tmp_path / "scoring.py").write_text(
        "from streamgale import Topology\n"
        "from streamgale.inference import OnnxBolt\n"
        "from streamgale.testing import FixedTupleSpout\n"
        "topology = Topology('scoring')\n"
        "topology.spout('src', FixedTupleSpout([[1.0, 2.0, 3.0, 4.0]], ['a', 'b', 'c', 'd']))\n"
        "topology.bolt('score', OnnxBolt(model='scorer.onnx', feeds={'readings': ['a', 'b', 'c', 'd']},\n"
        "              outputs=['score'])).shuffle('src')\n")
    out = run_cli("local", str(tmp_path / "scoring.py"), "--duration", "1")
    assert out.returncode == 2, out.stderr
    assert (f"\nerror: model file {tmp_path}/scorer.onnx does not exist (model = 'scorer.onnx', "
            f"read relative to {tmp_path})") in out.stderr
    assert "Traceback" not in out.stderr
