"""``streamgale``: the command line. Thin: parse, build config, call the library."""

from __future__ import annotations

import logging
import sys

import click

from streamgale.config import Config, ConfigError, load_config, topology_config
from streamgale.runtime.loader import TopologyFileError, load_topology
from streamgale.topology import TopologyError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

CONFIG_HELP = "key=value setting, applied over the config file and the topology's config (repeatable)"


def setup_logging(config: Config) -> None:
    logging.basicConfig(level=config["logging_level"], format=LOG_FORMAT, stream=sys.stderr, force=True)


def fail(message: str, code: int = 2) -> "click.exceptions.Exit":
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


class State:
    def __init__(self, config_file: str | None, nimbus: str | None):
        self.config_file = config_file
        self.nimbus = nimbus

    def nimbus_addresses(self, config: Config) -> list[str]:
        """--nimbus HOST:PORT[,HOST:PORT...], else nimbus.host:nimbus.port from config."""
        if self.nimbus:
            return [a.strip() for a in self.nimbus.split(",") if a.strip()]
        return [f"{config['nimbus.host']}:{config['nimbus.port']}"]

    def client(self, timeout: float = 5.0):
        from streamgale.wire.rpc import NimbusClient

        return NimbusClient(self.nimbus_addresses(self.base_config()), timeout=timeout)

    def base_config(self) -> Config:
        try:
            return load_config(self.config_file)
        except ConfigError as e:
            fail(str(e))
            raise  # unreachable

    def topology(self, path: str, overrides: tuple[str, ...]):
        """Load config and topology; exit with one clear line on any error."""
        base = self.base_config()
        try:
            base = base.with_overrides(overrides)
            topology = load_topology(path, base)
            config = topology_config(base, topology.config, overrides)
        except (ConfigError, TopologyError) as e:
            fail(f"invalid topology in {path}: {e}")
        except TopologyFileError as e:
            fail(str(e))
        return topology, config


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", metavar="FILE", envvar="STREAMGALE_CONF",
              help="Config file (default: $STREAMGALE_CONF, else ./config.yaml if present).")
@click.option("--nimbus", metavar="HOST:PORT",
              help="Nimbus to talk to; several separated by commas (default: nimbus.host:nimbus.port).")
@click.version_option(package_name="streamgale")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, nimbus: str | None) -> None:
    """StreamGale: run Storm-style topologies of spouts and bolts in Python.

    Try a topology on this machine with `streamgale local examples/word_count.py`;
    run a cluster on this machine with `streamgale dev-cluster`, then `submit`.
    """
    ctx.obj = State(config_file, nimbus)


@cli.command()
@click.argument("topology_file", type=click.Path(dir_okay=False))
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop after this many seconds (default: run until Ctrl-C).")
@click.option("-c", "overrides", multiple=True, metavar="KEY=VALUE", help=CONFIG_HELP)
@click.pass_obj
def local(state: State, topology_file: str, duration: float | None, overrides: tuple[str, ...]) -> None:
    """Run TOPOLOGY_FILE in this process, with no cluster.

    Every component runs with its declared parallelism and groupings, through
    the same routing code a cluster uses. Ctrl-C (or --duration) stops it
    cleanly, calling close/cleanup. Exits 1 if a component raised.
    """
    from streamgale.local import run_local

    topology, config = state.topology(topology_file, overrides)
    setup_logging(config)
    log = logging.getLogger("streamgale.local")
    log.info("running topology '%s' locally (%d components)%s", topology.name,
             len(topology.components), f" for {duration:g} s" if duration else "; Ctrl-C stops")
    result = run_local(topology, config, duration)
    log.info("stopped after %.1f s", result.seconds)
    if result.errors:
        first = result.errors[0]
        fail(f"{len(result.errors)} error(s) raised by components; first: component "
             f"'{first.component}' task {first.task}: {type(first.error).__name__}: {first.error}",
             code=1)


@cli.command("config")
@click.option("-c", "overrides", multiple=True, metavar="KEY=VALUE", help=CONFIG_HELP)
@click.pass_obj
def show_config(state: State, overrides: tuple[str, ...]) -> None:
    """List every config key with its effective value and meaning."""
    from streamgale.config import SETTINGS

    try:
        config = state.base_config().with_overrides(overrides)
    except ConfigError as e:
        fail(str(e))
    width = max(len(k) for k in SETTINGS)
    for key, setting in SETTINGS.items():
        value = config[key]
        shown = ",".join(value) if isinstance(value, tuple) else ("null" if value is None else value)
        click.echo(f"{key:<{width}}  {str(shown):<26} {setting.doc}")


def main() -> None:
    cli(prog_name="streamgale")


from . import client_commands, daemon_commands, observe_commands, ui_command  # noqa: E402,F401  (register commands)
