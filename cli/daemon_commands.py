"""Daemons: nimbus, supervisor, and the development helpers dev-zookeeper and dev-cluster."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

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
    run_daemon(Nimbus(config, host or config["nimbus.host"], port or config["nimbus.port"]), "nimbus")


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

    config = daemon_config(state, overrides)
    setup_logging(config)
    run_daemon(Supervisor(config, host or default_host(), state.nimbus_addresses(config), shutdown_workers),
               "supervisor")


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
    from streamgale.dev.zookeeper_server import ZooKeeperServer

    config = daemon_config(state, ())
    setup_logging(config)
    log = logging.getLogger("streamgale.dev-cluster")
    root = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="streamgale-dev-"))
    zk = ZooKeeperServer(port=zookeeper_port, data_dir=root / "zookeeper")
    try:
        zk.start()
    except Exception as e:  # noqa: BLE001
        fail(str(e), code=1)
    procs: list[subprocess.Popen] = []
    common = [sys.executable, "-m", "streamgale.cli"]
    if state.config_file:
        common += ["--config", state.config_file]
    zk_opt = ["-c", f"zookeeper.servers=[{zk.address}]"]
    try:
        procs.append(subprocess.Popen(common + ["nimbus", "--host", "127.0.0.1", *zk_opt]))
        for i in range(supervisors):
            port = config["network.port"] + i * config["workers"]
            procs.append(subprocess.Popen(common + [
                "supervisor", "--host", "127.0.0.1", "--shutdown-workers", *zk_opt,
                "-c", f"network.port={port}", "-c", f"supervisor.local_dir={root / f'supervisor-{i}'}"]))
        log.info("dev cluster up: ZooKeeper %s, nimbus 127.0.0.1:%d, %d supervisors; state in %s; "
                 "Ctrl-C stops it", zk.address, config["nimbus.port"], supervisors, root)
        stop_on_signals()
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        log.error("a daemon exited; stopping the dev cluster")
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        zk.stop()
        if not base_dir:
            shutil.rmtree(root, ignore_errors=True)
