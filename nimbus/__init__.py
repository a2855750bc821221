"""Nimbus: the master daemon (installed as streamgale.nimbus)."""
