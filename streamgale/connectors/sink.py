"""The sink contract: a bolt that acks its inputs only once they are written.

A connector subclasses :class:`SinkBolt` and implements ``connect()`` and
``write(tuples)`` (write every tuple of the batch, or raise). The base class:

- batches inputs: a batch is written when it holds ``batch_size`` tuples, or when
  ``max_wait`` seconds passed since its first tuple (it asks for tick tuples at
  that interval: ``component_config``);
- acks every input of a batch once ``write`` returned, and fails every input of a
  batch whose ``write`` raised (the spouts replay them: at-least-once, so a sink's
  writes should be idempotent where duplicates matter, or use the checkpoint-committed
  sink of the Redis connector);
- on an error, drops the connection and reconnects with backoff before the next
  write; ``connection_lost``, ``reconnects``, ``written``, ``failed_batches`` are
  its metrics (``counters()``).

Bolts that emit nothing downstream declare no outputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from streamgale.components import Bolt, TopologyContext
from streamgale.tuples import Tuple

from .reconnect import Reconnecting

log = logging.getLogger("streamgale.connectors")


class SinkBolt(Reconnecting, Bolt):
    auto_ack = False
    batch_size: ClassVar[int] = 100
    max_wait: ClassVar[float] = 0.1  # seconds a partial batch may wait
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def component_config(cls) -> dict[str, Any]:
        return {"topology.tick_interval": cls.max_wait}

    def write(self, tuples: list[Tuple]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement write(tuples)")

    def disconnect(self) -> None:
        """Close the connection (best effort)."""

    def prepare(self, context: TopologyContext) -> None:
        self._name = f"{context.component}[{context.task_id}]"
        self._batch: list[Tuple] = []
        self._first = 0.0
        self._connected = False
        self._next_connect = 0.0
        self._connect_delay = self.reconnect_backoff
        self.stats = {"written": 0, "failed_batches": 0, "connection_lost": 0, "reconnects": 0}

    def process(self, tup: Tuple) -> None:
        if not tup.is_tick:
            if not self._batch:
                self._first = self.clock()
            self._batch.append(tup)
            if len(self._batch) < self.batch_size:
                return
        elif not self._batch or self.clock() - self._first < self.max_wait:
            return
        self.flush()

    def flush(self) -> None:
        """Write the batch now: ack its tuples if written, fail them if not."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        if not self._ensure_connected():
            self._fail(batch)
            return
        try:
            self.write(batch)
        except Exception as exc:  # noqa: BLE001 - any write error: replay and reconnect
            self.stats["connection_lost"] += 1
            self._connected = False
            self._next_connect = self.clock() + self._connect_delay
            log.warning("%s: writing %d tuples failed (%s); they are failed for replay, reconnecting",
                        self._name, len(batch), exc)
            try:
                self.disconnect()
            except Exception:  # noqa: BLE001
                pass
            self._fail(batch)
            return
        self.stats["written"] += len(batch)
        for tup in batch:
            self.ack(tup)

    def _fail(self, batch: list[Tuple]) -> None:
        self.stats["failed_batches"] += 1
        for tup in batch:
            self.fail(tup)


    def counters(self) -> dict[str, Any]:
        if "stats" not in self.__dict__:
            return {}  # prepare() has not run (or raised)
        return {**self.stats, "batched": len(self._batch), "connected": self._connected}

    def cleanup(self) -> None:
        try:
            self.flush()
        finally:
            try:
                self.disconnect()
            except Exception:  # noqa: BLE001
                pass
