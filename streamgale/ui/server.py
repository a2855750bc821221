"""The UI's HTTP shell: routes requests to nimbus (through NimbusClient) and to :mod:`.api`.

Standard library only: a :class:`ThreadingHTTPServer` runs each request in its
own thread, and each request opens its own :class:`NimbusClient` (clients are
not thread-safe; the ZeroMQ context is shared). Nimbus errors become JSON
``{"error", "type", "status"}`` answers: 404 for NotFound, 400 for a refused
request, 502 when nimbus is unreachable or failed.

Every request first passes :class:`.access.Access` (the Host header; for actions the
content type, the Origin and the token), and every response carries
:data:`.access.SECURITY_HEADERS`. An action's body is read under a deadline
(``body_timeout``): a body cut short or late is a 400, and nothing runs.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from streamgale.client import tail_lines
from streamgale.health import LIVENESS, READINESS
from streamgale.security import Security
from streamgale.wire.protocol import NimbusError
from streamgale.wire.rpc import NimbusClient

from . import api, prometheus
from .access import SECURITY_HEADERS, Access, UiConfigError, allowed_hosts, check_listening, read_token_file
from .api import ApiError

log = logging.getLogger("streamgale.ui")

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 64 * 1024
BODY_TIMEOUT = 10.0  # seconds an action's whole body may take to arrive
NIMBUS_STATUS = {"NotFound": 404, "BadRequest": 400, "InvalidTopology": 400, "AlreadyExists": 409}
ACTIONS = ("activate", "deactivate", "rebalance", "kill")

ClientFactory = Callable[[], NimbusClient]
LogClientFactory = Callable[[str], NimbusClient]  # a supervisor's log endpoint "host:port" -> a client of it


def nimbus_error(e: NimbusError) -> ApiError:
    kind = getattr(e, "type", "Internal")
    status = NIMBUS_STATUS.get(kind, 502)
    return ApiError(status, f"nimbus: {e}" if status == 502 else str(e), kind)


def _config(client: NimbusClient, name: str) -> dict[str, Any] | None:
    """``topology_config``, or None when nimbus cannot give it (a nimbus older than the op)."""
    try:
        return client.topology_config(name)
    except NimbusError as e:
        log.debug("no config for %s: %s", name, e)
        return None


def _stats(client: NimbusClient, name: str) -> dict[str, Any] | None:
    """``topology_stats``, or None when nimbus cannot give them (older nimbus, no report yet)."""
    try:
        return client.topology_stats(name)
    except NimbusError as e:
        log.debug("no stats for %s: %s", name, e)
        return None


class UiServer(ThreadingHTTPServer):
    """The UI's HTTP server, listening once built; ``serve_forever`` in one thread, ``shutdown`` from another.

    ``token``: what every action needs as ``Authorization: Bearer`` (None: actions are open, and
    then only a loopback address is accepted: :class:`.access.UiConfigError` otherwise).
    ``hosts``: names to answer to besides the listening address and loopback (``ui.allowed_hosts``).
    ``log_client_factory``: a client of a supervisor's log endpoint, for worker logs (default: one
    without security, 3 s timeout).
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], client_factory: ClientFactory, *, token: str | None = None,
                 hosts: Iterable[str] = (), body_timeout: float = BODY_TIMEOUT,
                 log_client_factory: LogClientFactory | None = None):
        self.client_factory = client_factory
        self.log_client_factory: LogClientFactory = log_client_factory or (
            lambda endpoint: NimbusClient(endpoint, timeout=3.0))
        self.body_timeout = body_timeout
        super().__init__(address, Handler)
        try:
            check_listening(str(self.server_address[0]), token)  # the address bound, a host name resolved
        except ValueError:
            self.server_close()
            raise
        self.access = Access(allowed_hosts([address[0], str(self.server_address[0])], hosts), token)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/" if isinstance(host, str) else f"http://{host.decode()}:{port}/"


def make_server(host: str, port: int, nimbus: Sequence[str], timeout: float = 3.0, *,
                token_file: str | os.PathLike[str] | None = None, hosts: Iterable[str] = (),
                security: Security | None = None) -> UiServer:
    """A UI server on ``host:port`` (0: a free port) talking to the nimbus(es) at ``nimbus``.

    ``token_file``: ``ui.token_file``; ``hosts``: ``ui.allowed_hosts``; ``security``: the key the
    UI calls nimbus with (security on). Raises ValueError (:class:`.access.UiConfigError`) for a
    bad token file, a bad nimbus address, open actions on an address that is not loopback, or
    security on without a token file (the UI's key would act for anyone who reaches its port)."""
    token = None if token_file is None else read_token_file(token_file)
    if security is not None and security.enabled and token is None:
        raise UiConfigError(f"security is on, so the UI needs ui.token_file (or --token-file): its actions run "
                            f"with the key '{security.identity}' and must not be open to anyone who reaches it")
    addresses = list(nimbus)
    try:
        NimbusClient(addresses, timeout=timeout, security=security).close()  # checks the addresses and keys now
    except NimbusError as e:
        raise UiConfigError(str(e)) from None
    return UiServer((host, port), lambda: NimbusClient(addresses, timeout=timeout, security=security), token=token,
                    hosts=hosts,
                    log_client_factory=lambda endpoint: NimbusClient(endpoint, timeout=timeout, security=security))


def parse_json(raw: bytes) -> Any:
    """An action's body: JSON (empty: ``{}``); else ApiError 400, also for nesting too deep to parse."""
    try:
        return json.loads(raw) if raw.strip() else {}
    except RecursionError:
        raise ApiError(400, "the request body is JSON nested too deeply") from None
    except ValueError as e:
        raise ApiError(400, f"the request body is not JSON: {e}") from None


class Handler(BaseHTTPRequestHandler):
    server: UiServer
    server_version = "StreamGaleUI/1"
    protocol_version = "HTTP/1.1"  # keep-alive: the page polls every 2 s
    timeout = 60  # closes idle keep-alive connections (and their threads)
    query: dict[str, list[str]] = {}  # the GET request's query parameters, set per request

    # -- routing ------------------------------------------------------------------------------

    GET_ROUTES: list[tuple[re.Pattern[str], str]] = [
        (re.compile(r"/api/v1/cluster/summary"), "cluster_summary"),
        (re.compile(r"/api/v1/supervisor/summary"), "supervisor_summary"),
        (re.compile(r"/api/v1/topology/summary"), "topology_summary"),
        (re.compile(r"/api/v1/topology/([^/]+)"), "topology"),
        (re.compile(r"/api/v1/topology/([^/]+)/component/([^/]+)"), "component"),
        (re.compile(r"/api/v1/topology/([^/]+)/worker/([^/]+)/log"), "worker_log"),
    ]
    POST_ROUTE = re.compile(r"/api/v1/topology/([^/]+)/([a-z]+)")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path in (LIVENESS, READINESS):  # probes come by IP (kubelet): no Host check; nothing secret
            ok, reason = (True, "ok") if url.path == LIVENESS else self._nimbus_reachable()
            return self._json(200 if ok else 503, {"ok": ok, "reason": reason})
        if not self._host_allowed():
            return
        self.query = parse_qs(url.query)
        windows: list[str | None] = [*self.query.get("window", [])] or [None]
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
        self._guard(self._post)

    def _post(self) -> None:
        # The body first (bounded in size and time), so that every answer leaves the connection
        # clean; then who is asking, then what.
        raw = self._read_body()
        self.server.access.check_host(self.headers.get("Host"))
        url = urlsplit(self.path)
        m = self.POST_ROUTE.fullmatch(url.path)
        if not m:
            raise ApiError(404, f"no such action: {url.path}", "NotFound")
        self._json(200, self.post_action(unquote(m.group(1)), m.group(2), raw))

    def _nimbus_reachable(self) -> tuple[bool, str]:
        """Readiness: a nimbus answers."""
        try:
            with self.server.client_factory() as client:
                answer = client.ping()
        except NimbusError as e:
            return False, f"cannot reach nimbus: {e}"
        return True, f"nimbus at {answer.get('address') if isinstance(answer, dict) else '?'} answers"

    def _host_allowed(self) -> bool:
        """False (and answered 421) when the Host header does not name this UI (DNS rebinding)."""
        try:
            self.server.access.check_host(self.headers.get("Host"))
        except ApiError as e:
            self._error(e)
            return False
        return True

    def _guard(self, respond: Callable[[], None]) -> None:
        try:
            respond()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the browser went away; nothing to answer
        except ApiError as e:
            self._error(e)
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
            return api.topology_detail(row, info, _stats(client, row["name"]), window, _config(client, row["name"]))

    def get_component(self, key: str, component: str, window: str | None = None) -> dict[str, Any]:
        window = api.parse_window(window)
        with self.server.client_factory() as client:
            row = api.find_topology(client.list_topologies(), key)
            info = client.topology_info(row["name"])
            return api.component_detail(row, info, _stats(client, row["name"]), component, window)

    def get_worker_log(self, key: str, worker: str, window: str | None = None) -> dict[str, Any]:
        """The last ``lines`` (query; default 200) lines of a worker's log, read through its supervisor."""
        lines = api.parse_lines((self.query.get("lines") or [""])[-1])
        with self.server.client_factory() as client:
            row = api.find_topology(client.list_topologies(), key)
            found = api.find_worker_log(row, client.topology_info(row["name"]), client.cluster_info(), worker)
        assert found.endpoint is not None
        with self.server.log_client_factory(found.endpoint) as supervisor:
            offset, text = tail_lines(lambda at, size: supervisor.read_log(found.topology_id, found.port, at, size),
                                      lines)
        return api.worker_log(row, found, text, offset, lines)

    def post_action(self, key: str, action: str, raw: bytes) -> dict[str, Any]:
        self.server.access.check_action(self.headers)
        body = parse_json(raw)
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

    def _read_body(self) -> bytes:
        """The whole body, as Content-Length says, within ``server.body_timeout``; else ApiError (400 or
        413), and the connection closes (what is left of the body must not be read as a request)."""
        try:
            return self._read_body_or_raise()
        except ApiError:
            self.close_connection = True
            raise

    def _read_body_or_raise(self) -> bytes:
        if self.headers.get("Transfer-Encoding") is not None:
            raise ApiError(400, "chunked request bodies are not supported: send the body with a Content-Length")
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if len(values) > 1:
            raise ApiError(400, "the request has conflicting Content-Length headers")
        text = values.pop() if values else "0"
        if not (text.isascii() and text.isdigit()):
            raise ApiError(400, f"Content-Length must be a number of bytes >= 0, got {text[:40]!r}")
        length = int(text)
        if length > MAX_BODY:
            raise ApiError(413, f"request body over {MAX_BODY} bytes", "PayloadTooLarge")
        deadline = time.monotonic() + self.server.body_timeout
        chunks: list[bytes] = []
        got = 0
        try:
            while got < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(length - got)
                if not chunk:
                    raise ApiError(400, f"the request body was cut short: Content-Length says {length} bytes, "
                                        f"the connection ended after {got}")
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            raise ApiError(400, f"the request body was cut short: Content-Length says {length} bytes, "
                                f"{got} arrived within {self.server.body_timeout:g} s", "Timeout") from None
        finally:
            self.connection.settimeout(self.timeout)
        return b"".join(chunks)

    def _static(self, path: str) -> None:
        name = "index.html" if path == "/" else path[len("/static/"):]
        file = (STATIC / name).resolve()
        if STATIC not in file.parents or not file.is_file():
            return self._json(404, {"error": f"no such file: {path}", "type": "NotFound", "status": 404})
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        self._send(200, file.read_bytes(), ctype)

    def _error(self, e: ApiError) -> None:
        self._json(e.status, {"error": str(e), "type": e.type, "status": e.status},
                   {"WWW-Authenticate": 'Bearer realm="streamgale-ui"'} if e.status == 401 else None)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body, default=str).encode(), "application/json", headers)

    def _send(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def end_headers(self) -> None:
        """Every response, http.server's own errors (501, 400 for a bad request line) too."""
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)
