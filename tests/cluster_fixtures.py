"""A real cluster for integration tests: nimbus and supervisors as CLI subprocesses.

The session's ZooKeeper with the test's own root; everything else is
``streamgale.dev.cluster.ProcessCluster``, which kills every daemon and every
worker at teardown, even when the test fails.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT

from streamgale.dev.cluster import ProcessCluster


class Cluster(ProcessCluster):
    """Nimbus and ``supervisors`` supervisors in ``tmp_path``, on ZooKeeper ``zk_address`` under ``zk_root``."""

    def __init__(self, tmp_path: Path, zk_address: str, zk_root: str, supervisors: int = 2, slots: int = 2):
        super().__init__(tmp_path, supervisors=supervisors, slots=slots, zookeeper=zk_address,
                         zookeeper_root=zk_root, session_timeout=4.0, cwd=ROOT)

    def stop(self) -> None:
        self.close()


@contextmanager
def started(c: ProcessCluster, request):
    """``c`` started; closed afterwards, its logs printed if the test failed."""
    try:
        c.start()
        yield c
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(c.logs())
        c.close()


@pytest.fixture
def cluster(tmp_path, zookeeper, zk_root, request):
    """Nimbus + 2 supervisors with 2 slots each, started, registered and answering."""
    with started(Cluster(tmp_path, zookeeper.address, zk_root), request) as c:
        yield c
