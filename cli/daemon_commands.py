"""Daemons: nimbus, supervisor, and the development helpers dev-zookeeper and dev-cluster."""

from __future__ import annotations

import logging
import signal
import socket
import time
from pathlib import Path

import click
import zmq

from streamgale.cluster.errors import ClusterStateError
from streamgale.cluster.state import open_cluster_state
from streamgale.config import ConfigError
from streamgale.security import Security

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


def cluster_state(config):
    try:
        return open_cluster_state(config)
    except ClusterStateError as e:  # e.g. an unreadable ZooKeeper credentials file
        fail(str(e), code=1)


HEALTH_HELP = ("Answer liveness (/healthz) and readiness (/readyz) probes over HTTP on this port "
               "(default: health.port; none if unset).")


def run_daemon(daemon, name: str, health_host: str = "", health_port: int | None = None) -> None:
    """Start, run until SIGTERM/SIGINT, close. Exits 1 with one line if start fails. With
    ``health_port``, probes are answered from before the start (not ready) to the end."""
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    health = None
    if health_port is not None:
        from streamgale.health import HealthServer

        try:
            health = HealthServer(health_host, health_port, daemon.probe_alive, daemon.probe_ready).start()
        except OSError as e:
            fail(f"{name} could not start: cannot serve health probes on {health_host}:{health_port}: "
                 f"{e.strerror or e}", code=1)
    try:
        _run(daemon, name)
    finally:
        if health is not None:
            health.close()


def _run(daemon, name: str) -> None:
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
@click.option("--health-port", type=click.IntRange(1, 65535), default=None, help=HEALTH_HELP)
@click.option("-c", "overrides", multiple=True, metavar="KEY=VALUE", help=CONFIG_HELP)
@click.pass_obj
def nimbus(state: State, host: str | None, port: int | None, health_port: int | None,
           overrides: tuple[str, ...]) -> None:
    """Run a nimbus (master) daemon; several may run, one leads and the others stand by."""
    from streamgale.nimbus.daemon import Nimbus

    config = daemon_config(state, overrides)
    setup_logging(config)
    host = host or config["nimbus.host"]
    security = Security.from_config(config)
    try:
        run_daemon(Nimbus(config, host, port or config["nimbus.port"], cluster_state(config),
                          zmq.Context.instance(), bind_host=config["network.bind"] or host, security=security),
                   "nimbus", config["network.bind"] or host, health_port or config["health.port"])
    finally:
        security.close()


@cli.command()
@click.option("--host", default=None, help="Address other workers reach this node at (default: this "
                                         "machine's name if it resolves, else 127.0.0.1).")
@click.option("--shutdown-workers", is_flag=True,
              help="Stop this node's workers on exit (by default they keep running and a restarted "
                   "supervisor adopts them).")
@click.option("--health-port", type=click.IntRange(1, 65535), default=None, help=HEALTH_HELP)
@click.option("-c", "overrides", multiple=True, metavar="KEY=VALUE", help=CONFIG_HELP)
@click.pass_obj
def supervisor(state: State, host: str | None, shutdown_workers: bool, health_port: int | None,
               overrides: tuple[str, ...]) -> None:
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
    host = host or default_host()
    security = Security.from_config(config)
    try:
        run_daemon(Supervisor(config, host, cluster_state(config),
                              lambda timeout: NimbusClient(addresses, timeout=timeout, security=security),
                              ProcessLauncher(), zmq.Context.instance(), shutdown_workers=shutdown_workers,
                              log_host=config["network.bind"] or host, security=security), "supervisor",
                   config["network.bind"] or host, health_port or config["health.port"])
    finally:
        security.close()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the daemon answers probes.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Its health port (default: health.port).")
@click.option("--ready", is_flag=True, help="Ask whether it is ready (/readyz), not only alive (/healthz).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True, metavar="SECONDS",
              help="Seconds to wait for the answer; no answer in time counts as not alive (not ready).")
@click.pass_obj
def health(state: State, host: str, port: int | None, ready: bool, timeout: float) -> None:
    """Probe a nimbus, supervisor or UI: exit 0 if it is alive (or, with --ready, ready), else 1.

    For container HEALTHCHECKs, systemd and scripts; Kubernetes can ask the
    same URLs itself (httpGet on /healthz and /readyz).
    """
    from streamgale.health import LIVENESS, READINESS, probe

    port = port or state.base_config()["health.port"]
    if port is None:
        fail("no port: pass --port or set health.port")
    ok, reason = probe(host, port, READINESS if ready else LIVENESS, timeout)
    click.echo(f"{'ready' if ready else 'alive'}: {reason}" if ok else
               f"not {'ready' if ready else 'alive'}: {reason}", err=not ok)
    if not ok:
        raise click.exceptions.Exit(1)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """SIGTERM and SIGINT both end the foreground wait (even where the shell ignored SIGINT)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


@cli.command("dev-zookeeper")
@click.option("--port", type=click.IntRange(1, 65535), default=2181, show_default=True,
              help="Client port to listen on (127.0.0.1 only).")
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
@click.option("--supervisors", type=click.IntRange(1, 16), default=2, show_default=True,
              help="How many supervisors (worker nodes) to run, each with `workers` slots.")
@click.option("--zookeeper-port", type=click.IntRange(1, 65535), default=2181, show_default=True,
              help="Port of the ZooKeeper it starts.")
@click.option("--dir", "base_dir", type=click.Path(file_okay=False), default=None,
              help="Where daemons keep state and logs (default: a temporary directory).")
@click.pass_obj
def dev_cluster(state: State, supervisors: int, zookeeper_port: int, base_dir: str | None) -> None:
    """ZooKeeper, a nimbus and N supervisors on localhost (loopback only), in one command. Ctrl-C stops them all.

    Supervisor i uses slot ports network.port + i*workers onwards. Submit to it
    with `streamgale submit FILE` (nimbus at nimbus.host:nimbus.port).
    """
    from streamgale.dev.cluster import ProcessCluster, ProcessClusterError, SupervisorNode
    from streamgale.dev.ports import port_is_free
    from streamgale.dev.zookeeper_server import ZooKeeperServerError

    config = daemon_config(state, ())
    setup_logging(config)
    log = logging.getLogger("streamgale.dev-cluster")
    slots = config["workers"]
    wanted = {"nimbus": [config["nimbus.port"]], "ZooKeeper": [zookeeper_port],
              "worker slots": list(range(config["network.port"], config["network.port"] + supervisors * slots))}
    taken = [f"{what} port {port}" for what, ports in wanted.items() for port in ports
             if not port_is_free("127.0.0.1", port)]
    if taken:
        fail(f"cannot start the dev cluster: {', '.join(taken)} on 127.0.0.1 already in use (is another "
             "dev cluster running? stop it, or choose other ports with nimbus.port, network.port and "
             "--zookeeper-port)", code=1)
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
        failed = f"{', '.join(cluster.exited())} exited"
    except ProcessClusterError as e:
        if not cluster.exited():
            raise click.ClickException(str(e)) from None
        failed = f"{', '.join(cluster.exited())} exited"
    except KeyboardInterrupt:
        failed = ""
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave daemons behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.close(grace=15)
    if failed:
        fail(f"{failed}; stopped the dev cluster", code=1)
