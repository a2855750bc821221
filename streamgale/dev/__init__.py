"""Internal: development helpers (a local ZooKeeper, free ports, a whole cluster on one machine)."""
