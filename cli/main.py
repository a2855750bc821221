"""``streamgale``: the command line. Thin: parse, build config, call the library."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from streamgale.client import (
    Client,
    NimbusError,
    PackageError,
    Submission,
    TopologyFileError,
    did_you_mean,
    nimbus_addresses,
    prepare,
    topology_from_file,
)
from streamgale.config import Config, ConfigError, load_config
from streamgale.topology import Topology, TopologyError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

CONFIG_HELP = "key=value setting, applied over the config file and the topology's config (repeatable)"

# What a topology file, its settings or its directory can be faulted for (exit 2).
INVALID_TOPOLOGY = (ConfigError, TopologyError, TopologyFileError, PackageError)


def setup_logging(config: Config) -> None:
    logging.basicConfig(level=config["logging_level"], format=LOG_FORMAT, stream=sys.stderr, force=True)


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


class State:
    """The global options, and the library calls every command makes with them; exits with one
    clear ``error:`` line on any error the user can fix."""

    def __init__(self, config_file: str | None, nimbus: str | None):
        self.config_file = config_file
        self.nimbus = nimbus

    def nimbus_addresses(self, config: Config) -> list[str]:
        """--nimbus HOST[:PORT][,HOST[:PORT]...] (port: nimbus.port), else nimbus.host:nimbus.port
        from config; a bad address exits 2 naming it."""
        try:
            return nimbus_addresses(self.nimbus, config)
        except ValueError as e:
            fail(f"--nimbus: {e}")

    @contextmanager
    def client(self, timeout: float = 5.0) -> Iterator[Client]:
        """A :class:`Client` of the nimbus in force; a nimbus error exits 1 with its message."""
        config = self.base_config()
        try:
            client = Client(self.nimbus, config=config, timeout=timeout)
        except ValueError as e:  # an address with a bad port
            fail(f"--nimbus: {e}")
        except NimbusError as e:  # security on, and this client's key files are missing or unsafe
            fail(str(e), code=1)
        try:
            with client:
                yield client
        except NimbusError as e:
            fail(str(e), code=1)

    def base_config(self) -> Config:
        try:
            return load_config(self.config_file)
        except ConfigError as e:
            fail(str(e))

    def topology(self, path: str, overrides: tuple[str, ...]) -> tuple[Topology, Config]:
        """Load config and topology; exit with one clear line on any error. Logging is set up
        first, so what the topology file logs while it builds the topology is seen."""
        base = self.base_config()
        setup_logging(base)
        try:
            return topology_from_file(path, base=base, config=overrides)
        except INVALID_TOPOLOGY as e:
            fail(str(e))

    def submission(self, path: str, name: str | None, overrides: tuple[str, ...]) -> Submission:
        """Validate and pack the topology file for submit; exit with one clear line on any error.
        Logging is set up first, so what the topology file logs while it builds the topology is seen."""
        base = self.base_config()
        setup_logging(base)
        try:
            return prepare(path, name=name, config=overrides, base=base)
        except INVALID_TOPOLOGY as e:
            fail(str(e))


def version_line() -> str:
    from importlib.metadata import version

    from streamgale.build import describe

    return f"streamgale {version('streamgale')}, {describe()}"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(version_line())
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", metavar="FILE", envvar="STREAMGALE_CONF",
              help="Config file (default: $STREAMGALE_CONF, else ./config.yaml if present).")
@click.option("--nimbus", metavar="HOST:PORT",
              help="Nimbus to talk to, several separated by commas; PORT defaults to nimbus.port "
                   "(default: nimbus.host:nimbus.port).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and which build of the hot path runs (compiled or pure Python), and exit.")
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
    from streamgale.runtime.executor import StartFailed

    try:
        result = run_local(topology, config, duration)
    except INVALID_TOPOLOGY as e:  # what only building the run finds (a model bolt's model file)
        fail(str(e))
    except StartFailed as e:  # its traceback is in the log above, as the component's error
        fail(str(e), code=1)
    log.info("stopped after %.1f s", result.seconds)
    if result.errors:
        first = result.errors[0]
        fail(f"{max(result.error_count, len(result.errors))} error(s) raised by components; first: component "
             f"'{first.component}' task {first.task}: {type(first.error).__name__}: {first.error}",
             code=1)


@cli.command("config")
@click.argument("key", required=False)
@click.option("-c", "overrides", multiple=True, metavar="KEY=VALUE", help=CONFIG_HELP)
@click.option("--topology", "-t", "topology", metavar="NAME",
              help="Show what running topology NAME's workers run with (the cluster's config as nimbus "
                   "reads it, under the topology's own; Storm's getTopologyConf), asked of nimbus.")
@click.pass_obj
def show_config(state: State, key: str | None, overrides: tuple[str, ...], topology: str | None) -> None:
    """List every config key with its effective value and meaning (secret values: <redacted>).

    With KEY, print only that key's value (for scripts: `streamgale config nimbus.port`), or
    with a prefix such as `nimbus`, the keys under it. With --topology NAME, the values are those
    of the running topology; the keys its own config set are marked [topology].
    """
    from streamgale.config import SETTINGS, redact

    own: frozenset[str] = frozenset()
    if topology is not None:
        if overrides:
            fail("-c changes this machine's config, not a running topology's: leave it out with --topology")
        with state.client() as client:
            remote = client.topology_config(topology)
        values = dict(remote["config"])  # redacted by nimbus
        own = frozenset(remote["topology_keys"])
    else:
        try:
            config = state.base_config().with_overrides(overrides)
        except ConfigError as e:
            fail(str(e))
        values = {k: redact(k, config[k]) for k in config}

    def shown(name: str) -> str:
        value = values[name]
        return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else (
            "null" if value is None else str(value))

    if key is not None and key in values:
        click.echo(shown(key))
        return
    keys = [k for k in values if key is None or k.startswith(key.rstrip(".") + ".")]
    if not keys:
        where = f" in topology '{topology}'" if topology is not None else ""
        listing = f"streamgale config --topology {topology}" if topology is not None else "streamgale config"
        fail(f"no config key '{key}'{where}{did_you_mean(key or '', values)} (`{listing}` lists them all)")
    width = max(len(k) for k in keys)
    for name in keys:
        doc = SETTINGS[name].doc if name in SETTINGS else (
            "(a key of the topology's own)" if topology is not None else "(a key of your own, from -c)")
        mark = "[topology] " if name in own and name in SETTINGS else ""
        click.echo(f"{name:<{width}}  {shown(name):<26} {mark}{doc}")


@cli.command()
def version() -> None:
    """Show the version and which build of the hot path runs, as --version does."""
    click.echo(version_line())


@cli.command("help")
@click.argument("command", nargs=-1)
@click.pass_context
def help_command(ctx: click.Context, command: tuple[str, ...]) -> None:
    """Show the help of COMMAND (as `streamgale COMMAND --help`), or with none, of streamgale."""
    parent = ctx.find_root()
    group: click.Command = parent.command
    for i, name in enumerate(command):
        where = " ".join(("streamgale", *command[:i]))
        if not isinstance(group, click.Group):
            fail(f"`{where}` has no subcommands, so no '{name}'")
        sub = group.get_command(parent, name)
        if sub is None:
            hint = did_you_mean(name, group.list_commands(parent))
            fail(f"no command '{name}' in `{where}`{hint} (`{where} --help` lists them)")
        parent = click.Context(sub, info_name=name, parent=parent)
        group = sub
    click.echo(parent.get_help())


def main() -> None:
    cli(prog_name="streamgale")


from . import client_commands, daemon_commands, keys_commands, model_commands, observe_commands, ui_command  # noqa: E402,F401,I001  (register commands)
