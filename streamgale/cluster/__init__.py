"""Internal: the cluster's shared state (records, ZooKeeper layout, storage, election, code store).

Not a public API: daemons use :class:`~streamgale.cluster.state.ClusterState`.
"""
