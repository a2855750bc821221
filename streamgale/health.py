"""Liveness and readiness over HTTP, for probes (Kubernetes, Docker, systemd, load balancers).

:class:`HealthServer` answers ``GET /healthz`` (liveness: is the daemon's main
loop turning?) and ``GET /readyz`` (readiness: can it do its job now?) with
200 or 503 and ``{"ok": bool, "reason": str}``. The two checks are functions
the daemon provides (``probe_alive`` and ``probe_ready`` of nimbus and supervisors); they
must be cheap and thread-safe (each request runs on its own thread). Nothing
secret is ever in an answer. :class:`LoopWatch` is the liveness half most
daemons need: the main loop ticks it, the probe asks how long ago.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("streamgale.health")

Check = Callable[[], tuple[bool, str]]
LIVENESS, READINESS = "/healthz", "/readyz"


class LoopWatch:
    """Liveness of a loop: stuck when it has not ticked for ``stuck_after`` seconds."""

    def __init__(self, stuck_after: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.stuck_after = stuck_after
        self.clock = clock
        self.ticked: float | None = None  # None: the loop has not started (yet)

    def tick(self) -> None:
        self.ticked = self.clock()

    def check(self) -> tuple[bool, str]:
        if self.ticked is None:
            return True, "starting"
        idle = self.clock() - self.ticked
        if idle > self.stuck_after:
            return False, f"the main loop has not turned for {idle:.0f} s"
        return True, "ok"


class HealthServer(ThreadingHTTPServer):
    """Serves the checks on ``host:port`` (0: a free one) from a daemon thread: :meth:`start`, :meth:`close`."""

    daemon_threads = True

    def __init__(self, host: str, port: int, live: Check, ready: Check):
        self.checks = {LIVENESS: live, READINESS: ready}
        super().__init__((host, port), _Handler)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer
    server_version = "StreamGaleHealth/1"
    timeout = 10

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        check = self.server.checks.get(self.path.split("?", 1)[0])
        if check is None:
            self._answer(404, {"ok": False, "reason": f"no such check; try {LIVENESS} or {READINESS}"})
            return
        try:
            ok, reason = check()
        except Exception as e:  # noqa: BLE001 - a failing check is a failed probe, not a dead server
            ok, reason = False, f"the check failed: {type(e).__name__}: {e}"
        self._answer(200 if ok else 503, {"ok": ok, "reason": reason})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s " + format, self.address_string(), *args)


def probe(host: str, port: int, path: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Ask a health endpoint: ``(ok, reason)``; an unreachable one is not ok, with the reason why."""
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http only, our own URL
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read() or b"{}")
        except ValueError:
            body = {}
        return False, str(body.get("reason") or f"HTTP {e.code}")
    except (OSError, ValueError) as e:
        return False, f"no answer from {url}: {getattr(e, 'reason', e)}"
    return bool(body.get("ok")), str(body.get("reason", ""))
