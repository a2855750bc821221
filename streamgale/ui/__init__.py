"""StreamGale's web UI: a REST API (``/api/v1/...``), Prometheus ``/metrics`` and a single-page app.

Run with ``streamgale ui``; see docs/ui.md. :mod:`.api` and :mod:`.prometheus`
build the responses from nimbus's answers and :mod:`.access` decides who may do
what (Host, Origin, the action token; all pure); :mod:`.server` is the HTTP shell.
"""

from .server import UiServer, make_server

__all__ = ["UiServer", "make_server"]
