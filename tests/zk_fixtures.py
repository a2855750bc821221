"""Real-ZooKeeper fixtures: one server per test session, one fresh root per test.

Like kazoo's own harness, every test gets its own namespace (``zk_root``) on a
shared server and every client is closed at teardown, pass or fail. Clients
are :class:`~streamgale.cluster.zk_storage.ZkStorage`, whose fault injectors
(``expire_session()``, ``drop_connection()``) tests call through
``state.storage``; nothing here touches kazoo itself.
"""

from __future__ import annotations

import shutil
import uuid

import pytest

from streamgale.cluster.state import ClusterState
from streamgale.cluster.storage import StorageError
from streamgale.cluster.zk_storage import ZkStorage
from streamgale.dev.zookeeper_server import ZooKeeperServer, ZooKeeperServerError, find_classpath

__all__ = ["zookeeper", "zk_root", "zk_storage", "cluster_state", "make_cluster_state", "TEST_SESSION_TIMEOUT"]

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
def zk_storage(zookeeper):
    """A raw started ZkStorage on the server, for injecting malformed data and stale nodes."""
    storage = ZkStorage([zookeeper.address], TEST_SESSION_TIMEOUT)
    storage.start(timeout=10)
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture
def zk_root(zookeeper):
    """A unique root znode for one test; deleted with everything under it afterwards."""
    root = f"/t-{uuid.uuid4().hex}"
    yield root
    storage = ZkStorage([zookeeper.address], TEST_SESSION_TIMEOUT)
    try:
        storage.start(timeout=10)
        for _ in range(5):  # a daemon still shutting down may add a node meanwhile
            try:
                storage.delete(root, recursive=True)
                break
            except StorageError:
                continue
    except StorageError:  # the server is gone: nothing to clean
        pass
    finally:
        storage.close()


@pytest.fixture
def make_cluster_state(zookeeper, zk_root):
    """Factory of started ClusterStates on this test's root, each on its own ZkStorage;
    all closed at teardown. Keywords: servers, session_timeout, root, max_code_size, start."""
    made: list[ClusterState] = []

    def make(servers=None, session_timeout=TEST_SESSION_TIMEOUT, root=None, start=True, **kw) -> ClusterState:
        storage = ZkStorage(servers or [zookeeper.address], session_timeout)
        state = ClusterState(storage, root or zk_root, **kw)
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
