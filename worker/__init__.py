"""Worker process: executors, routing, transport (installed as streamgale.worker)."""
