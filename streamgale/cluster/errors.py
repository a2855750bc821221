"""The errors of the cluster state layer, shared by its modules.

Storage failures below this layer are :class:`~streamgale.cluster.storage.StorageError`;
:class:`~streamgale.cluster.state.ClusterState` turns them into :class:`ClusterStateError`.
"""

from __future__ import annotations


class ClusterStateError(Exception):
    """The cluster's storage could not be reached or holds something unusable."""


class TopologyExists(ClusterStateError):
    """A topology with this id or name is already stored."""


class FencedOut(ClusterStateError):
    """A fenced write came from a contender that is not (or no longer) the leader."""


class StaleAssignment(ClusterStateError):
    """The assignment changed since the version the write was based on."""
