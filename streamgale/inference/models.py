"""Loaded models: ONNX Runtime sessions and PyTorch modules behind one small interface.

A :class:`Model` has ``inputs`` and ``outputs`` (:class:`TensorSpec`), a
``digest`` (sha256 of the file) and ``run(arrays) -> {output name: array}``,
which may be called from any thread (both runtimes release the GIL while they
compute). :func:`acquire` loads a model once per process and shares it between
the tasks that use the same file with the same options; :func:`release` drops
a task's reference, and the last one frees it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .plan import ModelError, TensorSpec

_ONNX_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


class Model(Protocol):
    path: str
    digest: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def read_model_file(path: str | os.PathLike[str], hint: str = "") -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist{hint}") from None
    except OSError as e:
        raise ModelError(f"model file {path} cannot be read: {e}") from None


class OnnxModel:
    """An ONNX Runtime session. ``providers`` in order of preference; asking for one this
    machine's onnxruntime does not have is an error that says what is there."""

    def __init__(self, path: str, data: bytes, providers: Sequence[str] = ("CPUExecutionProvider",),
                 intra_op_threads: int = 1, inter_op_threads: int = 1):
        import onnxruntime as ort

        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            gpu = " (the CUDA provider needs the onnxruntime-gpu package and a CUDA GPU)" \
                if "CUDAExecutionProvider" in missing else ""
            raise ModelError(f"ONNX Runtime execution provider {', '.join(missing)} is not available on this machine"
                             f"{gpu}; available: {', '.join(available)}. Set topology.inference.providers to "
                             f"those it has, e.g. [CPUExecutionProvider]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        try:
            self.session = ort.InferenceSession(data, options, providers=list(providers))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(f"model file {path} is not a model ONNX Runtime can load: "
                             f"{str(e).strip().splitlines()[0][:300]}") from None
        self.path = path
        self.digest = hashlib.sha256(data).hexdigest()
        self.providers = tuple(self.session.get_providers())
        self.inputs = tuple(_onnx_spec(i, path) for i in self.session.get_inputs())
        self.outputs = tuple(_onnx_spec(o, path) for o in self.session.get_outputs())
        self._names = [o.name for o in self.outputs]

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self.session.run(self._names, dict(arrays))))


def _onnx_spec(arg: Any, path: str) -> TensorSpec:
    dtype = _ONNX_TYPES.get(arg.type)
    if dtype is None:
        raise ModelError(f"model file {path}: input or output '{arg.name}' is of type {arg.type}, which a model "
                         f"bolt does not feed or emit (it takes {', '.join(sorted(set(_ONNX_TYPES)))})")
    return TensorSpec(arg.name, dtype, tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape))


class TorchModel:
    """A program saved by ``torch.export.save`` (a ``.pt2`` file, exported with a dynamic batch
    dimension), a TorchScript file (``torch.jit.save``), or the weights (``state_dict``) of the
    module that ``build()`` returns. PyTorch has no input signature to read, so ``inputs`` (name -> (dtype,
    shape), first dimension the batch) and ``output_names`` are declared by the bolt; the model
    is called with the inputs as positional arguments in that order, and returns a tensor or a
    tuple of tensors, one per output name."""

    def __init__(self, path: str, data: bytes, inputs: Mapping[str, tuple[str, Sequence[int | None]]],
                 output_names: Sequence[str], build: Any = None, threads: int = 1):
        try:
            import torch
        except ImportError:
            raise ModelError("a PyTorch model bolt needs PyTorch: pip install 'streamgale[torch]'") from None
        import io

        self._torch = torch
        self.threads = threads
        exported = str(path).endswith(".pt2")
        try:
            if build is not None:
                module = build()
                module.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
                module.eval()
            elif exported:
                module = torch.export.load(io.BytesIO(data)).module()
            else:
                module = torch.jit.load(io.BytesIO(data), map_location="cpu")
                module.eval()
        except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
            kind = ("the state_dict of build()'s module" if build is not None else
                    "a program saved by torch.export.save" if exported else "a TorchScript file (torch.jit.save)")
            raise ModelError(f"model file {path} is not {kind}: {str(e).strip().splitlines()[0][:300]}") from None
        self.module = module
        self.path = path
        self.digest = hashlib.sha256(data).hexdigest()
        self.inputs = tuple(TensorSpec(name, np.dtype(dtype).name, tuple(shape)) for name, (dtype, shape)
                            in inputs.items())
        self.outputs = tuple(TensorSpec(name, "float32", ()) for name in output_names)
        self._names = list(output_names)

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            result = self.module(*(torch.from_numpy(np.ascontiguousarray(arrays[i.name])) for i in self.inputs))
        results = result if isinstance(result, (tuple, list)) else (result,)
        if len(results) != len(self._names):
            raise ModelError(f"model {self.path} returned {len(results)} outputs; the bolt names "
                             f"{len(self._names)} ({', '.join(self._names)})")
        return {name: r.detach().cpu().numpy() for name, r in zip(self._names, results)}


# -- one copy per process ---------------------------------------------------------------------

_lock = threading.Lock()
_cache: dict[tuple[Any, ...], list[Any]] = {}  # key -> [model, references]


def acquire(key: tuple[Any, ...], load: Any) -> Model:
    """The model cached under ``key`` (the file's digest and the load options), loading it with
    ``load()`` on first use; thread-safe."""
    with _lock:
        entry = _cache.get(key)
        if entry is None:
            entry = _cache[key] = [load(), 0]
        entry[1] += 1
        model: Model = entry[0]
        return model


def release(model: Model) -> None:
    with _lock:
        for key, entry in list(_cache.items()):
            if entry[0] is model:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _cache[key]
                return


def loaded_count() -> int:
    """How many distinct models this process holds (for tests and metrics)."""
    with _lock:
        return len(_cache)
