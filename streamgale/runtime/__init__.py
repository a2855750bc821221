"""Internal: the runtime shared by local mode, ``streamgale.testing`` and cluster workers.

Executors, collectors, routing, the executor loop and the acker. Nothing here
does I/O of its own; a cluster worker plugs its transport in through
:class:`~streamgale.runtime.loop.LoopIO`. Not a public API.
"""
