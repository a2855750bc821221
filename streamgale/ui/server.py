"""The UI's HTTP shell: routes requests to nimbus (through NimbusClient) and to :mod:`.api`.

Standard library only: a :class:`ThreadingHTTPServer` runs each request in its
own thread, and each request opens its own :class:`NimbusClient` (clients are
not thread-safe; the ZeroMQ context is shared). Nimbus errors become JSON
``{"error", "type", "status"}`` answers: 404 for NotFound, 400 for a refused
request, 502 when nimbus is unreachable or failed.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from streamgale.wire.protocol import NimbusError
from streamgale.wire.rpc import NimbusClient

from . import api, prometheus
from .api import ApiError

log = logging.getLogger("streamgale.ui")

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 64 * 1024
NIMBUS_STATUS = {"NotFound": 404, "BadRequest": 400, "InvalidTopology": 400, "AlreadyExists": 409}
ACTIONS = ("activate", "deactivate", "rebalance", "kill")

ClientFactory = Callable[[], NimbusClient]


def nimbus_error(e: NimbusError) -> ApiError:
    kind = getattr(e, "type", "Internal")
    status = NIMBUS_STATUS.get(kind, 502)
    return ApiError(status, f"nimbus: {e}" if status == 502 else str(e), kind)


def _stats(client: NimbusClient, name: str) -> dict[str, Any] | None:
    """``topology_stats``, or None when nimbus cannot give them (older nimbus, no report yet)."""
    try:
        return client.topology_stats(name)
    except NimbusError as e:
        log.debug("no stats for %s: %s", name, e)
        return None


class UiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], client_factory: ClientFactory):
        self.client_factory = client_factory
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/" if isinstance(host, str) else f"http://{host.decode()}:{port}/"


def make_server(host: str, port: int, nimbus: Sequence[str], timeout: float = 3.0) -> UiServer:
    """A UI server on ``host:port`` (0: a free port) talking to the nimbus(es) at ``nimbus``."""
    addresses = list(nimbus)
    NimbusClient(addresses, timeout=timeout).close()  # checks the addresses now
    return UiServer((host, port), lambda: NimbusClient(addresses, timeout=timeout))


class Handler(BaseHTTPRequestHandler):
    server: UiServer
    server_version = "StreamGaleUI/1"
    protocol_version = "HTTP/1.1"  # keep-alive: the page polls every 2 s
    timeout = 60  # closes idle keep-alive connections (and their threads)

    # -- routing ------------------------------------------------------------------------------

    GET_ROUTES: list[tuple[re.Pattern[str], str]] = [
        (re.compile(r"/api/v1/cluster/summary"), "cluster_summary"),
        (re.compile(r"/api/v1/supervisor/summary"), "supervisor_summary"),
        (re.compile(r"/api/v1/topology/summary"), "topology_summary"),
        (re.compile(r"/api/v1/topology/([^/]+)"), "topology"),
        (re.compile(r"/api/v1/topology/([^/]+)/component/([^/]+)"), "component"),
    ]
    POST_ROUTE = re.compile(r"/api/v1/topology/([^/]+)/([a-z]+)")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        windows: list[str | None] = [*parse_qs(url.query).get("window", [])] or [None]
        window = windows[-1]
        if url.path == "/metrics":
            return self._guard(lambda: self._send(200, self._metrics().encode(), prometheus.CONTENT_TYPE))
        if url.path == "/" or url.path.startswith("/static/"):
            return self._guard(lambda: self._static(url.path))
        for pattern, name in self.GET_ROUTES:
            m = pattern.fullmatch(url.path)
            if m:
                args = [unquote(g) for g in m.groups()]
                return self._guard(lambda: self._json(200, getattr(self, "get_" + name)(*args, window=window)))
        self._json(404, {"error": f"no such page: {url.path}", "type": "NotFound", "status": 404})

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        m = self.POST_ROUTE.fullmatch(url.path)
        if not m:
            self.close_connection = True  # its body is left unread
            return self._json(404, {"error": f"no such action: {url.path}", "type": "NotFound", "status": 404})
        self._guard(lambda: self._json(200, self.post_action(unquote(m.group(1)), m.group(2))))

    def _guard(self, respond: Callable[[], None]) -> None:
        try:
            respond()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the browser went away; nothing to answer
        except ApiError as e:
            self._json(e.status, {"error": str(e), "type": e.type, "status": e.status})
        except NimbusError as e:
            err = nimbus_error(e)
            self._json(err.status, {"error": str(err), "type": err.type, "status": err.status})
        except Exception as e:  # noqa: BLE001 - one bad request must not end the server
            log.exception("%s %s failed", self.command, self.path)
            self._json(500, {"error": f"internal error: {type(e).__name__}: {e}", "type": "Internal",
                             "status": 500})

    # -- endpoints ----------------------------------------------------------------------------

    def get_cluster_summary(self, window: str | None = None) -> dict[str, Any]:
        with self.server.client_factory() as client:
            return api.cluster_summary(client.cluster_info())

    def get_supervisor_summary(self, window: str | None = None) -> dict[str, Any]:
        with self.server.client_factory() as client:
            return api.supervisor_summary(client.cluster_info())

    def get_topology_summary(self, window: str | None = None) -> dict[str, Any]:
        with self.server.client_factory() as client:
            return api.topology_summary(client.list_topologies())

    def get_topology(self, key: str, window: str | None = None) -> dict[str, Any]:
        window = api.parse_window(window)
        with self.server.client_factory() as client:
            row = api.find_topology(client.list_topologies(), key)
            info = client.topology_info(row["name"])
            return api.topology_detail(row, info, _stats(client, row["name"]), window)

    def get_component(self, key: str, component: str, window: str | None = None) -> dict[str, Any]:
        window = api.parse_window(window)
        with self.server.client_factory() as client:
            row = api.find_topology(client.list_topologies(), key)
            info = client.topology_info(row["name"])
            return api.component_detail(row, info, _stats(client, row["name"]), component, window)

    def post_action(self, key: str, action: str) -> dict[str, Any]:
        body = self._read_body()
        if action not in ACTIONS:
            raise ApiError(404, f"unknown action '{action}' (one of: {', '.join(ACTIONS)})", "NotFound")
        args = api.action_args(action, body)
        with self.server.client_factory() as client:
            row = api.find_topology(client.list_topologies(), key)
            getattr(client, action)(row["name"], **args)
        log.info("%s %s (%s) from %s", action, row["name"], args or "-", self.client_address[0])
        return {"status": "ok", "action": action, "topology": row["name"]}

    def _metrics(self) -> str:
        with self.server.client_factory() as client:
            cluster = client.cluster_info()
            rows = client.list_topologies()
            return prometheus.render(cluster, [(row, _stats(client, row["name"])) for row in rows])

    # -- plumbing -----------------------------------------------------------------------------

    def _read_body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        # A JSON content type cannot be sent cross-site without a CORS preflight, which this server
        # never grants: so a page elsewhere cannot make a visitor's browser kill a topology.
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "actions need Content-Type: application/json")
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise ApiError(400, f"the request body is not JSON: {e}") from None

    def _static(self, path: str) -> None:
        name = "index.html" if path == "/" else path[len("/static/"):]
        file = (STATIC / name).resolve()
        if STATIC not in file.parents or not file.is_file():
            return self._json(404, {"error": f"no such file: {path}", "type": "NotFound", "status": 404})
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        self._send(200, file.read_bytes(), ctype)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body, default=str).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)
