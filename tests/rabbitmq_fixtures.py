"""Real-RabbitMQ fixtures: one private broker node per test session.

``rabbitmq`` runs Debian's ``rabbitmq-server`` as a node of its own (its own name, AMQP,
distribution and epmd ports from ``free_port()``, data, logs, config and Erlang cookie in a
temporary folder, no plugins): never the system service. Tests may ``stop()``/``kill()`` it and
``start()`` it again on the same ports (durable queues and persistent messages survive);
``rabbitmq_queue`` starts it again if a previous test left it down and gives a fresh queue name,
deleted afterwards. The node and its epmd are gone at teardown, pass or fail.
"""

from __future__ import annotations

import uuid

import pytest

from streamgale.dev.rabbitmq_server import RabbitMQServer, find_rabbitmq_server

__all__ = ["RabbitMQServer", "rabbitmq", "rabbitmq_queue"]


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory):
    """A RabbitMQ node for the whole session (skipped, naming the fix, if it is not installed)."""
    executable = find_rabbitmq_server()
    if executable is None:
        pytest.skip("rabbitmq-server is not installed: run `make system-packages` (installs Debian's "
                    "rabbitmq-server)")
    server = RabbitMQServer(executable, tmp_path_factory.mktemp("rabbitmq"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def rabbitmq_queue(rabbitmq):
    """A fresh queue name on the session's node (started again if a test stopped it); deleted after."""
    rabbitmq.start()
    name = f"q-{uuid.uuid4().hex[:12]}"
    yield name
    if rabbitmq.running:
        with rabbitmq.connection() as conn:
            channel = conn.channel()
            for q in (name, f"{name}.dead"):
                channel.queue_delete(q)
