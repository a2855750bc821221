"""Real-redis fixtures: one ``redis-server`` per test session, an empty database per test.

``redis_server`` runs Debian's ``redis-server`` on a free port of its own (never 6379, where a
system service may listen), without persistence, in a temporary folder. Tests may ``kill()`` it
to prove errors and ``start()`` it again on the same port; ``redis_url`` starts it again if a
previous test left it down, and empties the database before and after each test. The process is
gone at teardown, pass or fail.
"""

from __future__ import annotations

import pytest

from streamgale.dev.redis_server import RedisServer, find_redis_server

__all__ = ["RedisServer", "redis_server", "redis_url"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server for the whole session (skipped, naming the fix, if it is not installed)."""
    executable = find_redis_server()
    if executable is None:
        pytest.skip("redis-server is not on PATH: run `make system-packages` (installs Debian's redis-server)")
    server = RedisServer(executable, tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_url(redis_server):
    """The URL of an empty database on the session's server (started again if a test killed it)."""
    redis_server.start()
    with redis_server.client() as c:
        c.flushdb()
    yield redis_server.url
    if redis_server.running:
        with redis_server.client() as c:
            c.flushdb()
