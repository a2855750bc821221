"""Model bolts: micro-batched inference off the executor loop (docs/ml.md).

A :class:`ModelBolt` task collects its input tuples into a batch that closes at
``max_batch`` tuples or ``max_wait`` seconds after its first tuple, whichever
comes first. Its inference thread runs the model on closed batches while the
loop goes on routing and acking (ONNX Runtime and PyTorch release the GIL), and
hands each result back to the loop thread (``call_soon_threadsafe``), where
every input's output tuple is emitted anchored to it and then the input is
acked. A tuple the model cannot take (a missing field, a wrong shape) is failed
alone; a batch whose inference raises has all its tuples failed; both report
the error, and the task goes on. While ``max_batch * max_inflight`` tuples are
inside the bolt it takes no more (``accepts_input``): its queue fills and the
spouts wait.

The model file is named relative to the topology file's directory (so it
ships in the code package), loaded once per worker process for all the tasks
that use it, and may be replaced while the topology runs
(:meth:`ModelBolt.model_updated`; ``streamgale model update``): the new version
is loaded and checked beside the old one on a thread of its own and takes over
at the next batch; one that fails to load or does not fit the bolt is refused,
reported, and the old one keeps serving.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from streamgale.components import Bolt, TopologyContext, apply_settings
from streamgale.config import MODEL_BOLT
from streamgale.tuples import Tuple

from . import models
from .plan import BadRow, ModelError, Plan, plan

log = logging.getLogger("streamgale.inference")

RECENT = 1024  # batches the latency percentiles are taken over


@dataclass
class _Serving:
    model: models.Model
    plan: Plan
    version: int


def refusal(version: int) -> str:
    """How a task's report of a refused model update begins (after the task's name); what
    ``streamgale model update --wait`` looks for in the component's errors."""
    return f"refused model version {version};"


class ModelBolt(Bolt):
    """Base of :class:`OnnxBolt` and :class:`TorchBolt`; set the class attributes in a subclass,
    or pass them as keyword arguments (``OnnxBolt(model="scorer.onnx", feeds={...}, ...)``)."""

    auto_ack = False
    model: ClassVar[str] = ""  # the model file, relative to the topology file's directory
    feeds: ClassVar[Mapping[str, str | Sequence[str]]] = {}  # model input -> field, or list of fields
    predictions: ClassVar[Mapping[str, str]] = {}  # output field -> model output (default: same names)
    max_batch: ClassVar[int] = 64
    max_wait: ClassVar[float] = 0.005  # seconds a batch waits for more tuples after its first
    max_inflight: ClassVar[int] = 2  # batches inside the bolt (collecting, queued, running) before it waits
    clock: Callable[[], float] = time.monotonic
    settings: ClassVar[tuple[str, ...]] = ("model", "feeds", "predictions", "outputs", "max_batch", "max_wait",
                                           "max_inflight")

    def __init__(self, **settings: Any):
        apply_settings(self, settings)
        _check_knobs(type(self).__name__, self.max_batch, self.max_wait, self.max_inflight)
        self._override: tuple[str, int] | None = None

    @classmethod
    def component_config(cls) -> dict[str, Any]:
        return {MODEL_BOLT: True}  # nimbus accepts model updates for this component

    # -- what a backend provides ------------------------------------------------------------------

    def load(self, path: str, data: bytes, context: TopologyContext) -> models.Model:
        raise NotImplementedError

    def load_key(self, context: TopologyContext) -> tuple[Any, ...]:
        """What besides the file's digest makes two loads the same model (shared per process)."""
        return (type(self).__name__,)

    # -- lifecycle (loop thread) ------------------------------------------------------------------

    def _bind(self, context: TopologyContext, name: str) -> None:
        self.name = name
        self.context = context
        self.base_dir = Path(context.base_dir)

    def prepare(self, context: TopologyContext) -> None:
        self._bind(context, f"bolt '{context.component}' task {context.task_id}")
        self._cond = threading.Condition()
        self._open: list[Tuple] = []
        self._opened_at = 0.0
        self._ready: deque[tuple[list[Tuple], float]] = deque()
        self._stopping = False
        self._next: _Serving | None = None
        self.inside = 0  # tuples taken in and not yet emitted and acked (or failed)
        self.limit = self.max_batch * self.max_inflight
        self.stats: dict[str, Any] = {"batches": 0, "inferred": 0, "inference_errors": 0, "bad_tuples": 0,
                                      "model_updates": 0, "model_updates_refused": 0}
        self._sizes: deque[int] = deque(maxlen=RECENT)
        self._latency: deque[float] = deque(maxlen=RECENT)
        self._waits: deque[float] = deque(maxlen=RECENT)
        self.serving = self._serve(*(self._override or (self.model, 1)))
        self._thread = threading.Thread(target=self._infer_forever, name=f"inference-{context.component}-"
                                        f"{context.task_id}", daemon=True)
        self._thread.start()

    def check_before_submit(self, context: TopologyContext) -> None:
        """What ``prepare`` checks (the model file loads, the feeds and outputs fit it), run by
        ``streamgale submit`` before anything is uploaded; raises :class:`ModelError`."""
        self._bind(context, f"bolt '{context.component}'")
        models.release(self._serve(*(self._override or (self.model, 1))).model)

    def accepts_input(self) -> bool:
        return self.inside < self.limit

    def process(self, tup: Tuple) -> None:
        if tup.is_tick:
            return
        self.inside += 1
        with self._cond:
            if not self._open:
                self._opened_at = self.clock()
                self._open.append(tup)
                self._cond.notify()  # the inference thread now waits for max_wait at most
            else:
                self._open.append(tup)
            if len(self._open) >= self.max_batch:
                self._ready.append((self._open, self._opened_at))
                self._open = []
                self._cond.notify()

    def cleanup(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        models.release(self.serving.model)
        if self._next is not None:
            models.release(self._next.model)

    # -- model updates ------------------------------------------------------------------------------

    def model_updated(self, path: str, version: int) -> None:
        """Serve the model file at ``path`` (absolute, or relative to the topology file's directory)
        as ``version`` from the next batch on. Before ``prepare`` it is simply the model to load;
        afterwards it is loaded and checked on a thread of its own, and refused (reported; the old
        model keeps serving) if it cannot be loaded or does not fit the bolt's feeds and outputs."""
        if not hasattr(self, "serving"):
            self._override = (path, version)
            return
        threading.Thread(target=self._load_update, args=(path, version), daemon=True,
                         name=f"model-update-{self.context.component}-{self.context.task_id}").start()

    def _load_update(self, path: str, version: int) -> None:
        try:
            serving = self._serve(path, version)
        except ModelError as e:
            old = self.serving.version
            self.call_soon_threadsafe(functools.partial(self._refused, e, version, old))
            return
        with self._cond:
            if self._next is not None:
                models.release(self._next.model)
            self._next = serving  # taken by the inference thread before its next batch

    def _refused(self, exc: ModelError, version: int, old: int) -> None:
        self.stats["model_updates_refused"] += 1
        self._report(exc, f"{self.name} {refusal(version)} version {old} keeps serving")

    def _serve(self, path: str, version: int) -> _Serving:
        if not path:
            raise ModelError(f"{self.name}: no model file named; set model = 'file.onnx' (relative to the "
                             f"topology file's directory)")
        full = Path(path) if Path(path).is_absolute() else self.base_dir / path
        data = models.read_model_file(full, f" (model = {path!r}, read relative to {self.base_dir}); put the "
                                            f"file in the topology's directory so it ships in the code package")
        key = (hashlib.sha256(data).hexdigest(), *self.load_key(self.context))
        model = models.acquire(key, lambda: self.load(str(full), data, self.context))
        try:
            outputs = self.context.outputs.get("default", ())
            mapping = plan(self.context.component, model.inputs, model.outputs, self.feeds, self.predictions,
                           outputs, self.max_batch, f"model {path} (version {version})", self.context.sources)
        except ModelError:
            models.release(model)
            raise
        return _Serving(model, mapping, version)

    # -- the inference thread -----------------------------------------------------------------------

    def _infer_forever(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
                if batch is None:
                    return
                if self._next is not None:  # a loaded update takes over between batches
                    old, self.serving, self._next = self.serving, self._next, None
                    models.release(old.model)
                    self.stats["model_updates"] += 1
                serving = self.serving
            self._infer(batch[0], batch[1], serving)

    def _take(self) -> tuple[list[Tuple], float] | None:
        """The next closed batch (with its first tuple's arrival), waiting for one; None to stop.
        Called with the condition held."""
        while not self._stopping:
            if self._ready:
                return self._ready.popleft()
            if self._open:
                remaining = self._opened_at + self.max_wait - self.clock()
                if remaining <= 0:
                    batch, self._open = self._open, []
                    return batch, self._opened_at
                self._cond.wait(remaining)
            else:
                self._cond.wait()
        return None

    def _infer(self, batch: list[Tuple], opened_at: float, serving: _Serving) -> None:
        started = self.clock()
        bad: list[tuple[Tuple, str]] = []
        good = batch
        rows: list[list[Any]] = []
        error: BaseException | None = None
        try:
            try:
                arrays = serving.plan.arrays(batch)
            except BadRow:
                good = []
                for tup in batch:
                    problem = serving.plan.check_row(tup)
                    if problem is None:
                        good.append(tup)
                    else:
                        bad.append((tup, problem))
                arrays = serving.plan.arrays(good) if good else {}
            if good:
                rows = serving.plan.rows(good, serving.model.run(arrays), serving.version)
        except Exception as exc:  # noqa: BLE001 - the model's own errors: this batch fails, the task goes on
            error = exc
        done = self.clock()
        self.stats["batches"] += 1
        self._sizes.append(len(batch))
        self._latency.append(done - started)
        self._waits.append(started - opened_at)
        self.call_soon_threadsafe(functools.partial(self._finish, good, rows, bad, error, serving.version))

    # -- results (loop thread) ---------------------------------------------------------------------

    def _finish(self, good: list[Tuple], rows: list[list[Any]], bad: list[tuple[Tuple, str]],
                error: BaseException | None, version: int) -> None:
        self.inside -= len(good) + len(bad)
        for tup, problem in bad:
            self.fail(tup)
            self.stats["bad_tuples"] += 1
            self._report(ModelError(problem), f"{self.name} failed a tuple the model cannot take")
        if error is not None:
            for tup in good:
                self.fail(tup)
            self.stats["inference_errors"] += 1
            self._report(error, f"{self.name}: inference of a batch of {len(good)} tuples with model version "
                                f"{version} raised; the batch's tuples are failed")
            return
        emit, ack = self.emit, self.ack
        for tup, values in zip(good, rows):
            emit(values, anchors=tup)
            ack(tup)
        self.stats["inferred"] += len(good)

    def counters(self) -> dict[str, Any]:
        serving = getattr(self, "serving", None)
        if serving is None:
            return {}
        sizes, latency, waits = list(self._sizes), sorted(self._latency), sorted(self._waits)
        out: dict[str, Any] = {**self.stats, "model_version": serving.version,
                               "model_digest": serving.model.digest[:12]}
        if sizes:
            out["batch_size_mean"] = round(sum(sizes) / len(sizes), 1)
            out["batch_size_p50"] = _pct(sorted(sizes), 0.5)
            out["batch_size_max"] = max(sizes)
            out["inference_ms_p50"] = round(_pct(latency, 0.5) * 1000, 3)
            out["inference_ms_p99"] = round(_pct(latency, 0.99) * 1000, 3)
            out["queue_wait_ms_p50"] = round(_pct(waits, 0.5) * 1000, 3)
            out["queue_wait_ms_p99"] = round(_pct(waits, 0.99) * 1000, 3)
        return out


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _check_knobs(name: str, max_batch: Any, max_wait: Any, max_inflight: Any) -> None:
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise ModelError(f"{name}: max_batch must be an integer >= 1, got {max_batch!r}")
    if not isinstance(max_wait, (int, float)) or isinstance(max_wait, bool) or max_wait < 0:
        raise ModelError(f"{name}: max_wait must be a number of seconds >= 0, got {max_wait!r}")
    if not isinstance(max_inflight, int) or isinstance(max_inflight, bool) or max_inflight < 1:
        raise ModelError(f"{name}: max_inflight must be an integer >= 1, got {max_inflight!r}")


class OnnxBolt(ModelBolt):
    """An ONNX model (scikit-learn through skl2onnx, TensorFlow through tf2onnx, PyTorch through
    torch.onnx). Its execution providers and threads come from ``topology.inference.*``."""

    def load_key(self, context: TopologyContext) -> tuple[Any, ...]:
        c = context.config
        return ("onnx", c["topology.inference.providers"], c["topology.inference.intra_op_threads"],
                c["topology.inference.inter_op_threads"])

    def load(self, path: str, data: bytes, context: TopologyContext) -> models.Model:
        c = context.config
        return models.OnnxModel(path, data, c["topology.inference.providers"],
                                c["topology.inference.intra_op_threads"], c["topology.inference.inter_op_threads"])


class TorchBolt(ModelBolt):
    """A PyTorch model: a ``torch.export`` program (``.pt2``), a TorchScript file, or the
    ``state_dict`` of the ``torch.nn.Module`` that :meth:`build` returns (override it for an
    eager model). ``inputs`` declares each model input
    as name -> (dtype, shape), first dimension the batch (None: any), in the order the model takes
    them; ``output_names`` names what it returns. Threads: ``topology.inference.intra_op_threads``."""

    inputs: ClassVar[Mapping[str, tuple[str, Sequence[int | None]]]] = {}
    output_names: ClassVar[Sequence[str]] = ("output",)
    settings = (*ModelBolt.settings, "inputs", "output_names")

    def build(self) -> Any:
        """The ``torch.nn.Module`` whose ``state_dict`` the model file holds; None (the default):
        the file is TorchScript."""
        return None

    def load_key(self, context: TopologyContext) -> tuple[Any, ...]:
        return ("torch", type(self).__module__, type(self).__qualname__,
                context.config["topology.inference.intra_op_threads"])

    def load(self, path: str, data: bytes, context: TopologyContext) -> models.Model:
        if not self.inputs:
            raise ModelError(f"{self.name}: a TorchBolt declares its model's inputs, e.g. "
                             f"inputs = {{'x': ('float32', (None, 4))}}: PyTorch files carry no signature")
        eager = type(self).build is not TorchBolt.build
        return models.TorchModel(path, data, self.inputs, self.output_names, self.build if eager else None,
                                 context.config["topology.inference.intra_op_threads"])
