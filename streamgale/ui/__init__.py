"""StreamGale's web UI: a REST API (``/api/v1/...``), Prometheus ``/metrics`` and a single-page app.

Run with ``streamgale ui``; see docs/ui.md. :mod:`.api` and :mod:`.prometheus`
build the responses from nimbus's answers (pure); :mod:`.server` is the HTTP shell.
"""

from .server import UiServer, make_server

__all__ = ["UiServer", "make_server"]
