"""Real-MQTT fixtures: one ``mosquitto`` broker per test session.

``mosquitto`` runs Debian's broker on a free port of its own (never 1883, where a system
service may listen), anonymous, with persistence on in a temporary folder, so that a test may
``stop()`` and ``start()`` it on the same port and the persistent sessions keep their queued
QoS 1 messages. The process is gone at teardown, pass or fail.
"""

from __future__ import annotations

import pytest

from streamgale.dev.mosquitto_server import MosquittoServer, find_mosquitto

__all__ = ["MosquittoServer", "mosquitto"]


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    """A mosquitto broker for the whole session (skipped, naming the fix, if it is not installed).

    A test that stops or kills it starts it again (``start()``, same port) before it ends."""
    executable = find_mosquitto()
    if executable is None:
        pytest.skip("mosquitto is not on PATH: run `make system-packages` (installs Debian's mosquitto)")
    server = MosquittoServer(executable, tmp_path_factory.mktemp("mosquitto"))
    try:
        server.start()
        yield server
    finally:
        server.kill()
