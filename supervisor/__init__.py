"""Supervisor: the per-node daemon (installed as streamgale.supervisor)."""
