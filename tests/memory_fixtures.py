"""In-memory ZooKeeper fixtures: a fresh MemoryZooKeeper per test, every client closed at teardown.

Import the fixture into a test module (``from memory_fixtures import memory_zookeeper``).
Tests wait for callbacks with ``memory_zookeeper.settle()``, never with a sleep.
"""

from __future__ import annotations

import pytest

from streamgale.cluster.memory_storage import MemoryZooKeeper

__all__ = ["memory_zookeeper"]


@pytest.fixture
def memory_zookeeper():
    """A MemoryZooKeeper; at teardown its clients are closed and their threads joined."""
    server = MemoryZooKeeper()
    try:
        yield server
    finally:
        server.close()
