"""Real-ZooKeeper fixtures: one server per test session, one fresh root per test.

Like kazoo's own harness, every test gets its own namespace (``zk_root``) on a
shared server and every client is closed at teardown, pass or fail. The
fault injectors (:func:`expire_session`, :func:`drop_connection`) reach into
the ClusterState's kazoo client; test code is the only place outside
``streamgale.cluster.state`` that touches kazoo.
"""

from __future__ import annotations

import shutil
import time
import uuid

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NotEmptyError
from kazoo.protocol.connection import _CONNECTION_DROP

from streamgale.cluster.state import ClusterState
from streamgale.dev.zookeeper_server import ZooKeeperServer, ZooKeeperServerError, find_classpath

__all__ = ["zookeeper", "zk_root", "zk_client", "cluster_state", "make_cluster_state", "expire_session",
           "drop_connection", "TEST_SESSION_TIMEOUT"]

TEST_SESSION_TIMEOUT = 2.0


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory):
    """A standalone ZooKeeper for the whole test session (skipped if not installed)."""
    try:
        find_classpath()
    except ZooKeeperServerError as e:
        pytest.skip(str(e))
    if shutil.which("java") is None:
        pytest.skip("ZooKeeper needs java on PATH (`apt-get install zookeeper`)")
    server = ZooKeeperServer(data_dir=tmp_path_factory.mktemp("zookeeper"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def zk_client(zookeeper):
    """A raw kazoo client, for injecting faults and malformed data."""
    client = KazooClient(zookeeper.address, timeout=TEST_SESSION_TIMEOUT)
    client.start(timeout=10)
    try:
        yield client
    finally:
        client.stop()
        client.close()


@pytest.fixture
def zk_root(zookeeper):
    """A unique root znode for one test; deleted with everything under it afterwards."""
    root = f"/t-{uuid.uuid4().hex}"
    yield root
    client = KazooClient(zookeeper.address, timeout=TEST_SESSION_TIMEOUT)
    try:
        client.start(timeout=10)
        for _ in range(5):  # a daemon still shutting down may add a node meanwhile
            try:
                client.delete(root, recursive=True)
                break
            except NotEmptyError:
                continue
    except Exception:  # noqa: BLE001 - never created, or the server is gone: nothing to clean
        pass
    finally:
        client.stop()
        client.close()


@pytest.fixture
def make_cluster_state(zookeeper, zk_root):
    """Factory of started ClusterStates on this test's root; all closed at teardown."""
    made: list[ClusterState] = []

    def make(**kw) -> ClusterState:
        kw.setdefault("servers", [zookeeper.address])
        kw.setdefault("root", zk_root)
        kw.setdefault("session_timeout", TEST_SESSION_TIMEOUT)
        start = kw.pop("start", True)
        state = ClusterState(**kw)
        made.append(state)
        if start:
            state.start(timeout=10)
        return state

    yield make
    for state in made:
        try:
            state.close()
        except Exception:  # noqa: BLE001 - closed already by the test
            pass


@pytest.fixture
def cluster_state(make_cluster_state) -> ClusterState:
    return make_cluster_state()


def expire_session(state: ClusterState, timeout: float = 10.0) -> None:
    """Really expire ``state``'s session on the server, as a long partition would.

    A second client takes the session over by id and password and closes it:
    the server ends the session and deletes its ephemeral znodes, and the
    original client learns on its next contact that the session expired
    (LOST), then opens a new one. Returns once the server says it is gone.
    """
    zk = state._zk
    session_id, password = zk.client_id
    thief = KazooClient(",".join(state.servers), client_id=(session_id, password), timeout=TEST_SESSION_TIMEOUT)
    thief.start(timeout=timeout)
    try:
        if thief.client_id[0] != session_id:
            raise AssertionError("could not take over the session to expire it")
    finally:
        thief.stop()
        thief.close()
    deadline = time.monotonic() + timeout
    while zk.client_id is not None and zk.client_id[0] == session_id:
        if time.monotonic() > deadline:
            raise AssertionError(f"session {session_id:#x} did not expire within {timeout} s")
        time.sleep(0.02)


def drop_connection(state: ClusterState) -> None:
    """Break ``state``'s TCP connection (SUSPENDED); the session survives and kazoo reconnects."""
    state._zk._call(_CONNECTION_DROP, None)
