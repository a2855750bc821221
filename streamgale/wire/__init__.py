"""Internal: every message that crosses a socket, typed and versioned, and the RPC sockets.

Not a public API; clients use :mod:`streamgale.client`.
"""
