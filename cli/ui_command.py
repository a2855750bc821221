"""``streamgale ui``: the web UI and REST API, talking to nimbus."""

from __future__ import annotations

import logging

import click

from .main import State, cli, fail, setup_logging

DEFAULT_PORT = 8080


@cli.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; the UI has no authentication).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help=f"Port to listen on; 0 picks a free one (default: ui.port, else {DEFAULT_PORT}).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True, metavar="SECONDS",
              help="How long to wait for nimbus on each call.")
@click.pass_obj
def ui(state: State, host: str, port: int | None, timeout: float) -> None:
    """Serve the web UI, the REST API (/api/v1/...) and Prometheus metrics (/metrics).

    Shows the cluster (nimbuses, supervisors, slots), each topology's component
    graph, live per-component and per-task stats, workers and errors, with
    buttons to activate, deactivate, rebalance and kill. Ctrl-C stops it.
    """
    from streamgale.ui import make_server

    config = state.base_config()
    setup_logging(config)
    if port is None:
        port = int(config.get("ui.port", DEFAULT_PORT) or DEFAULT_PORT)
    nimbus = state.nimbus_addresses(config)
    try:
        server = make_server(host, port, nimbus, timeout=timeout)
    except ValueError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
    log = logging.getLogger("streamgale.ui")
    log.info("StreamGale UI on %s (nimbus %s)", server.url, ", ".join(nimbus))
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log.info("UI stopped")
