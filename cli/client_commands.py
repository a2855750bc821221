"""Commands that talk to nimbus: submit, list, kill, activate, deactivate, rebalance, info."""

from __future__ import annotations

import json

import click

from .main import CONFIG_HELP, State, cli, fail

WAIT_HELP = "Seconds to wait, spouts deactivated, before acting (default: the topology's message timeout)."


@cli.command()
@click.argument("topology_file", type=click.Path(dir_okay=False))
@click.option("--name", help="Name to run it under (default: the name in the topology file).")
@click.option("-c", "overrides", multiple=True, metavar="KEY=VALUE", help=CONFIG_HELP)
@click.pass_obj
def submit(state: State, topology_file: str, name: str | None, overrides: tuple[str, ...]) -> None:
    """Validate TOPOLOGY_FILE here, upload its directory as the code package, and run it.

    The file's directory is packed (without __pycache__, .git, .venv) and
    every worker runs with it on sys.path. Set the number of worker processes
    with -c topology.workers=N.
    """
    submission = state.submission(topology_file, name, overrides)
    with state.client() as client:
        topology_id = client.upload(submission)  # up to a minute: it carries the code package
    click.echo(f"submitted topology '{submission.name}' as {topology_id} ({len(submission.code)} bytes of code)")


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h}h {m:02d}m {s:02d}s"


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def list_(state: State, as_json: bool) -> None:
    """List running topologies: name, id, status, workers, executors, tasks, uptime."""
    with state.client() as client:
        rows = client.list_topologies()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No topologies running.")
        return
    header = ("NAME", "ID", "STATUS", "WORKERS", "EXECUTORS", "TASKS", "UPTIME")
    table = [header] + [(r["name"], r["id"], r["status"], str(r["workers"]), str(r["executors"]),
                         str(r["tasks"]), _duration(r["uptime"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


@cli.command()
@click.argument("name")
@click.option("-w", "--wait", type=click.FloatRange(min=0), metavar="SECONDS", help=WAIT_HELP)
@click.pass_obj
def kill(state: State, name: str, wait: float | None) -> None:
    """Kill topology NAME: deactivate its spouts, wait, then remove its workers and state."""
    with state.client() as client:
        client.kill(name, wait)
    click.echo(f"killing topology '{name}'" + ("" if wait == 0 else " after the wait"))


@cli.command()
@click.argument("name")
@click.pass_obj
def activate(state: State, name: str) -> None:
    """Resume calling next_tuple on NAME's spouts."""
    with state.client() as client:
        client.activate(name)
    click.echo(f"activated topology '{name}'")


@cli.command()
@click.argument("name")
@click.pass_obj
def deactivate(state: State, name: str) -> None:
    """Stop calling next_tuple on NAME's spouts (bolts keep processing)."""
    with state.client() as client:
        client.deactivate(name)
    click.echo(f"deactivated topology '{name}'")


@cli.command()
@click.argument("name")
@click.option("-w", "--wait", type=click.FloatRange(min=0), metavar="SECONDS", help=WAIT_HELP)
@click.option("-n", "--workers", type=click.IntRange(min=1), help="New number of worker processes.")
@click.option("-e", "--executors", "executors", multiple=True, metavar="COMPONENT=PARALLELISM",
              help="New executor count of a component, up to its task count (repeatable).")
@click.pass_obj
def rebalance(state: State, name: str, wait: float | None, workers: int | None, executors: tuple[str, ...]) -> None:
    """Change NAME's worker count and/or component parallelism, live."""
    parallelism: dict[str, int] = {}
    for item in executors:
        comp, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            fail(f"-e expects COMPONENT=PARALLELISM, got {item!r}")
        parallelism[comp.strip()] = int(value)
    if workers is None and not parallelism:
        fail("nothing to change: give -n WORKERS and/or -e COMPONENT=PARALLELISM")
    with state.client() as client:
        client.rebalance(name, wait, workers, parallelism)
    click.echo(f"rebalancing topology '{name}'")


@cli.command()
@click.argument("name")
@click.pass_obj
def info(state: State, name: str) -> None:
    """Show NAME's record, assignment and recent errors as JSON."""
    with state.client() as client:
        details = client.info(name)
    click.echo(json.dumps(details, indent=2, default=str))


@cli.command("cluster")
@click.pass_obj
def cluster_info(state: State) -> None:
    """Show the nimbus leader, standbys and supervisors."""
    with state.client() as client:
        c = client.cluster()
    click.echo(f"leader: {c['leader']}")
    click.echo(f"nimbuses: {', '.join(c['nimbuses'])}")
    click.echo(f"topologies: {c['topologies']}")
    for s in c["supervisors"]:
        click.echo(f"supervisor {s['id']} on {s['host']}: {s['used']}/{s['slots']} slots used")
