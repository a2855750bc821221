"""The streamgale command line (installed as streamgale.cli)."""
