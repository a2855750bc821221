"""Connectors to brokers, files and sensors (docs/connectors.md).

:class:`SourceSpout` and :class:`SinkBolt` are the contracts every connector
follows: commit to the broker on ack only, replay or dead-letter on fail,
reconnect with backoff, report lag and connection losses as metrics.

The connectors: ``streamgale.connectors.redis_streams`` (Redis Streams source,
stream and key/value sinks, the checkpoint-committed sink),
``streamgale.connectors.files`` (directory source, rotating file sink),
``streamgale.connectors.mqtt`` and ``streamgale.connectors.rabbitmq`` (these two
need the ``connectors`` extra: ``pip install 'streamgale[connectors]'``). Their
classes are importable from here too; a module is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .sink import SinkBolt
from .source import Message, SourceSpout

_LAZY = {
    "RedisStreamSpout": "redis_streams", "RedisStreamSink": "redis_streams", "RedisKeyValueSink": "redis_streams",
    "RedisCommitSink": "redis_streams", "RedisConnectorError": "redis_streams",
    "DirectorySource": "files", "RotatingFileSink": "files", "LineId": "files", "read_offsets": "files",
    "MqttSource": "mqtt", "MqttSink": "mqtt",
    "RabbitMQSource": "rabbitmq", "RabbitMQSink": "rabbitmq",
}

__all__ = ["Message", "SinkBolt", "SourceSpout", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamgale.connectors' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
