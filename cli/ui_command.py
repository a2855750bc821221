"""``streamgale ui``: the web UI and REST API, talking to nimbus."""

from __future__ import annotations

import logging
import signal
import threading

import click

from .main import State, cli, fail, setup_logging

DEFAULT_PORT = 8080


@cli.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface). Anywhere but loopback needs a token "
                   "file (ui.token_file or --token-file).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help=f"Port to listen on; 0 picks a free one (default: ui.port, else {DEFAULT_PORT}).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True, metavar="SECONDS",
              help="How long to wait for nimbus on each call.")
@click.option("--token-file", metavar="PATH", default=None,
              help="File (mode 600) holding the token that actions need as 'Authorization: Bearer TOKEN' "
                   "(default: ui.token_file; none: actions are open, on loopback only).")
@click.pass_obj
def ui(state: State, host: str, port: int | None, timeout: float, token_file: str | None) -> None:
    """Serve the web UI, the REST API (/api/v1/...) and Prometheus metrics (/metrics).

    Shows the cluster (nimbuses, supervisors, slots), each topology's component
    graph, live per-component and per-task stats, workers and errors, with
    buttons to activate, deactivate, rebalance and kill. Ctrl-C stops it.

    Reading needs no token. With a token file, every action needs its token
    (the page has a field for it); without one, the UI listens on loopback only.
    It answers only to its listening address, localhost, 127.0.0.1, ::1 and the
    names in ui.allowed_hosts (docs/ui.md, "Securing the web UI").
    """
    from streamgale.security import Security
    from streamgale.ui import make_server

    config = state.base_config()
    setup_logging(config)
    if port is None:
        port = int(config.get("ui.port", DEFAULT_PORT) or DEFAULT_PORT)
    if token_file is None:
        token_file = config.get("ui.token_file")
    nimbus = state.nimbus_addresses(config)
    try:
        server = make_server(host, port, nimbus, timeout=timeout, token_file=token_file,
                             hosts=config.get("ui.allowed_hosts") or (), security=Security.from_config(config))
    except ValueError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
    log = logging.getLogger("streamgale.ui")
    log.info("StreamGale UI on %s (nimbus %s); actions %s; answers to %s", server.url, ", ".join(nimbus),
             "need the token of " + str(token_file) if server.access.token else "need no token (loopback only)",
             ", ".join(sorted(server.access.hosts)))
    # SIGTERM (systemd, docker stop, Kubernetes) as Ctrl-C: serve_forever returns once shutdown(),
    # which waits for it, has run on another thread
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log.info("UI stopped")
