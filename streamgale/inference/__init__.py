"""Streaming ML inference: model bolts with micro-batching (docs/ml.md)."""

from .bolt import ModelBolt, OnnxBolt, TorchBolt
from .plan import MODEL_VERSION_FIELD, ModelError, TensorSpec

__all__ = ["MODEL_VERSION_FIELD", "ModelBolt", "ModelError", "OnnxBolt", "TensorSpec", "TorchBolt"]
