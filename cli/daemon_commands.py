"""Daemons: nimbus, supervisor, and the development helpers dev-zookeeper and dev-cluster."""

from __future__ import annotations

import logging
import signal
import socket
import time
from pathlib import Path

import click
import zmq

from streamgale.cluster.state import open_cluster_state
from streamgale.config import ConfigError

from .main import CONFIG_HELP, State, cli, fail, setup_logging


def default_host() -> str:
    """This machine's name if it resolves, else loopback."""
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, None)
        return name
    except OSError:
        return "127.0.0.1"


def daemon_config(state: State, overrides: tuple[str, ...]):
    try:
        return state.base_config().with_overrides(overrides)
    except ConfigError as e:
        fail(str(e))


def run_daemon(daemon, name: str) -> None:
    """Start, run until SIGTERM/SIGINT, close. Exits 1 with one line if start fails."""
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    try:
        daemon.start()
    except Exception as e:  # noqa: BLE001 - report, don't dump a trace
        logging.getLogger("streamgale").debug("start failed", exc_info=True)
        try:
            daemon.close()
        finally:
            fail(f"{name} could not start: {e}", code=1)
    try:
        daemon.run()
    finally:
        daemon.close()


@cli.command()
@click.option("--host", default=None, help="Address clients and supervisors reach this nimbus at "
                                         "(default: nimbus.host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="API port (default: nimbus.port).")
@click.option("-c", "overrides", multiple=True, metavar="KEY=VALUE", help=CONFIG_HELP)
@click.pass_obj
def nimbus(state: State, host: str | None, port: int | None, overrides: tuple[str, ...]) -> None:
    """Run a nimbus (master) daemon; several may run, one leads and the others stand by."""
    from streamgale.nimbus.daemon import Nimbus

    config = daemon_config(state, overrides)
    setup_logging(config)
    run_daemon(Nimbus(config, host or config["nimbus.host"], port or config["nimbus.port"],
                      open_cluster_state(config), zmq.Context.instance()), "nimbus")


@cli.command()
@click.option("--host", default=None, help="Address other workers reach this node at (default: this "
                                         "machine's name if it resolves, else 127.0.0.1).")
@click.option("--shutdown-workers", is_flag=True,
              help="Stop this node's workers on exit (by default they keep running and a restarted "
                   "supervisor adopts them).")
@click.option("-c", "overrides", multiple=True, metavar="KEY=VALUE", help=CONFIG_HELP)
@click.pass_obj
def supervisor(state: State, host: str | None, shutdown_workers: bool, overrides: tuple[str, ...]) -> None:
    """Run a supervisor: registers this node's worker slots and runs the workers assigned to them.

    Slots are ports network.port .. network.port+workers-1; state, code and
    worker logs live in supervisor.local_dir.
    """
    from streamgale.supervisor.daemon import Supervisor
    from streamgale.supervisor.launcher import ProcessLauncher

    from streamgale.wire.rpc import NimbusClient

    config = daemon_config(state, overrides)
    setup_logging(config)
    addresses = state.nimbus_addresses(config)
    run_daemon(Supervisor(config, host or default_host(), open_cluster_state(config),
                          lambda timeout: NimbusClient(addresses, timeout=timeout), ProcessLauncher(),
                          zmq.Context.instance(), shutdown_workers=shutdown_workers), "supervisor")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """SIGTERM and SIGINT both end the foreground wait (even where the shell ignored SIGINT)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


@cli.command("dev-zookeeper")
@click.option("--port", type=click.IntRange(1, 65535), default=2181, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Keep data here (default: a temporary directory, deleted on exit).")
def dev_zookeeper(port: int, data_dir: str | None) -> None:
    """Run a standalone ZooKeeper from the installed distribution, for development. Ctrl-C stops it."""
    from streamgale.dev.zookeeper_server import ZooKeeperServer

    server = ZooKeeperServer(port=port, data_dir=Path(data_dir) if data_dir else None)
    try:
        server.start()
    except Exception as e:  # noqa: BLE001
        fail(str(e), code=1)
    click.echo(f"ZooKeeper running at {server.address}; Ctrl-C stops it")
    try:
        stop_on_signals()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@cli.command("dev-cluster")
@click.option("--supervisors", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--zookeeper-port", type=click.IntRange(1, 65535), default=2181, show_default=True)
@click.option("--dir", "base_dir", type=click.Path(file_okay=False), default=None,
              help="Where daemons keep state and logs (default: a temporary directory).")
@click.pass_obj
def dev_cluster(state: State, supervisors: int, zookeeper_port: int, base_dir: str | None) -> None:
    """ZooKeeper, a nimbus and N supervisors on localhost, in one command. Ctrl-C stops them all.

    Supervisor i uses slot ports network.port + i*workers onwards. Submit to it
    with `streamgale submit FILE` (nimbus at nimbus.host:nimbus.port).
    """
    from streamgale.dev.cluster import ProcessCluster, ProcessClusterError, SupervisorNode
    from streamgale.dev.zookeeper_server import ZooKeeperServerError

    config = daemon_config(state, ())
    setup_logging(config)
    log = logging.getLogger("streamgale.dev-cluster")
    slots = config["workers"]
    # The daemons run with this config (written to the cluster's directory), on localhost.
    cluster = ProcessCluster(
        base_dir, nodes=[SupervisorNode("127.0.0.1", config["network.port"] + i * slots) for i in range(supervisors)],
        slots=slots, nimbus_port=config["nimbus.port"], zookeeper_port=zookeeper_port,
        logging_level=config["logging_level"], settings=config.to_dict(), shutdown_workers=True,
        log_files=False, temp_prefix="streamgale-dev-")
    try:
        try:
            cluster.start_zookeeper()
        except ZooKeeperServerError as e:
            fail(str(e), code=1)
        stop_on_signals()
        cluster.start_nimbus()
        for i in range(supervisors):
            cluster.start_supervisor(i)
        cluster.wait_ready(supervisors)
        log.info("dev cluster up: ZooKeeper %s, nimbus 127.0.0.1:%d, %d supervisors; state in %s; "
                 "Ctrl-C stops it", cluster.zookeeper_address, cluster.nimbus_port, supervisors, cluster.dir)
        while not cluster.exited():
            time.sleep(0.5)
        log.error("a daemon exited; stopping the dev cluster")
    except ProcessClusterError as e:
        if not cluster.exited():
            raise click.ClickException(str(e)) from None
        log.error("a daemon exited; stopping the dev cluster")
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave daemons behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.close(grace=15)
