"""Commands that talk to nimbus: submit, list, kill, activate, deactivate, rebalance, info."""

from __future__ import annotations

import json
from pathlib import Path

import click
from streamgale.nimbus.scheduler import worker_cap

from streamgale.client import Client, NimbusError, NimbusUnavailable, NotStarted, StatusChange, TopologySummary
from streamgale.cluster.package import IGNORE_FILE
from streamgale.config import Config, unknown_keys

from .main import CONFIG_HELP, State, cli, fail
from .observe_commands import daemon_bad_input_lines

LARGE_PACKAGE = 8 << 20  # bytes of code package above which submit suggests an ignore file
REQUIREMENTS_WAIT = 600.0  # seconds submit waits for a topology with a requirements.txt to start
WAIT_HELP = ("Seconds to wait, spouts deactivated, before acting, at most 86400 (24 h) "
             "(default: the topology's message timeout).")


@cli.command()
@click.argument("topology_file", type=click.Path(dir_okay=False))
@click.option("--name", help="Name to run it under (default: the name in the topology file).")
@click.option("-c", "overrides", multiple=True, metavar="KEY=VALUE", help=CONFIG_HELP)
@click.option("--wait", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Wait up to SECONDS until every worker runs, and fail with the supervisors' report if "
                   "the code cannot run there (default: 600 when the directory has a requirements.txt, "
                   "else 0: return once nimbus has the topology).")
@click.pass_obj
def submit(state: State, topology_file: str, name: str | None, overrides: tuple[str, ...],
           wait: float | None) -> None:
    """Validate TOPOLOGY_FILE here, upload its directory as the code package, and run it.

    The file's directory is packed (without __pycache__, .git, .venv, and what
    a .streamgaleignore file there lists, in .gitignore's syntax) and every
    worker runs with it on sys.path; submit warns above 8 MiB. Set the number of worker processes
    with -c topology.workers=N.

    A requirements.txt beside the file (and a wheelhouse/ of wheels, for clusters
    without a package index) gives the topology a Python environment of its own,
    built by every supervisor that runs it; submit then waits until its workers
    run, and if pip fails it prints pip's error and kills the topology.
    """
    submission = state.submission(topology_file, name, overrides)
    layers = [submission.config, *(c.config for c in submission.spec.components.values())]
    unknown = sorted({k for layer in layers for k in unknown_keys(layer)})
    if unknown:  # allowed (components read them), but a typo would otherwise go unseen
        click.echo(f"topology config keys StreamGale does not know, passed to components as is: "
                   f"{', '.join(unknown)}", err=True)
    with state.client() as client:
        requested = Config().with_topology_config(submission.config)["topology.workers"]  # as nimbus reads it
        capped = _capped(client, requested, sum(c.parallelism for c in submission.spec.components.values()))
        topology_id = client.upload(submission)  # up to a minute: it carries the code package
        click.echo(f"submitted topology '{submission.name}' as {topology_id} ({len(submission.code)} bytes of code)")
        if len(submission.code) > LARGE_PACKAGE:
            click.echo(f"warning: the code package is {len(submission.code) / 2**20:.1f} MiB, and every supervisor "
                       f"fetches it; list what the workers do not need (data, outputs) in a {IGNORE_FILE} file "
                       f"beside {Path(topology_file).name} (.gitignore's syntax)", err=True)
        if capped:
            click.echo(f"warning: {capped}", err=True)
        if wait is None:
            wait = REQUIREMENTS_WAIT if submission.requirements else 0.0
        if wait > 0:
            _wait_running(client, submission.name, wait, submission.requirements)


def _capped(client: Client, requested: int, executors: int, own_slots: int = 0) -> str | None:
    """Why a topology will get fewer workers than ``requested`` on the cluster as it is now
    (``own_slots``: the slots it holds already), or None."""
    free = sum(s["slots"] - s["used"] for s in client.cluster()["supervisors"]) + own_slots
    return worker_cap(requested, executors, free)[1]


def _wait_running(client: Client, name: str, wait: float, requirements: bool) -> None:
    if requirements:
        click.echo("waiting for the supervisors to build its Python environment (requirements.txt)", err=True)
    try:
        client.wait_running(name, wait)
    except NotStarted as e:
        if not e.refused:  # its workers are restarted: a resource it opens may come back
            fail(f"topology '{name}' is failing to start: {e}; it stays submitted and its workers are "
                 f"restarted: `streamgale info {name}` shows the traceback")
        client.kill(name, 0)
        fail(f"topology '{name}' cannot start, so it was killed: {e}")
    except TimeoutError as e:
        fail(f"{e}; it stays submitted: `streamgale info {name}` shows what its supervisors report")
    click.echo(f"topology '{name}' is running")


def _workers(row: TopologySummary) -> str:
    """The WORKERS cell: running, and "of requested" when the topology got fewer than it asked for."""
    requested = row.get("workers_requested")
    if requested and row["workers"] < requested and row["status"] not in ("KILLED", "CORRUPT"):
        return f"{row['workers']} of {requested}"
    return str(row["workers"])


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
    table = [header] + [(r["name"], r["id"], "FAILING" if r.get("failing") else r["status"], _workers(r),
                         str(r["executors"]), str(r["tasks"]), _duration(r["uptime"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    for r in rows:
        if r.get("failing"):
            click.echo(f"{r['name']} is failing to start: {r['failing']} (`streamgale info {r['name']}` "
                       "shows the traceback)", err=True)


@cli.command()
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@click.option("-w", "--wait", type=click.FloatRange(min=0), metavar="SECONDS", help=WAIT_HELP)
@click.pass_obj
def kill(state: State, names: tuple[str, ...], wait: float | None) -> None:
    """Kill each topology NAME: deactivate its spouts, wait, then remove its workers and state.

    Every NAME is tried even when one cannot be killed (each gets its own line); the exit
    status is then 1. A topology listed as CORRUPT (its stored record cannot be read) is
    removed at once; NAME may then be its id.
    """
    failed = False
    with state.client() as client:
        for name in dict.fromkeys(names):
            try:
                client.kill(name, wait)
            except NimbusUnavailable:
                raise  # no nimbus: the other names would only wait for it in turn
            except NimbusError as e:
                click.echo(f"error: {e}", err=True)
                failed = True
                continue
            click.echo(f"killing topology '{name}'" + ("" if wait == 0 else " after the wait"))
    if failed:
        raise click.exceptions.Exit(1)


@cli.command()
@click.argument("name")
@click.pass_obj
def activate(state: State, name: str) -> None:
    """Resume calling next_tuple on NAME's spouts."""
    with state.client() as client:
        change = client.activate(name)
    click.echo(_status_change(name, "activated", change))


@cli.command()
@click.argument("name")
@click.pass_obj
def deactivate(state: State, name: str) -> None:
    """Stop calling next_tuple on NAME's spouts (bolts keep processing)."""
    with state.client() as client:
        change = client.deactivate(name)
    click.echo(_status_change(name, "deactivated", change))


def _status_change(name: str, done: str, change: StatusChange) -> str:
    if not change.get("after_rebalance"):
        return f"{done} topology '{name}'"
    return (f"topology '{name}' is rebalancing: status {change.get('status')} applies when the rebalance ends, "
            f"in at most {change.get('applies_in', 0):.0f} s")


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
        if not sep or not comp.strip() or not value.strip().isdigit() or int(value) < 1:
            fail(f"-e expects COMPONENT=PARALLELISM with PARALLELISM an integer >= 1, got {item!r}")
        parallelism[comp.strip()] = int(value)
    if workers is None and not parallelism:
        fail("nothing to change: give -n WORKERS and/or -e COMPONENT=PARALLELISM")
    with state.client() as client:
        capped = None
        if workers is not None:
            details = client.info(name)
            count = sum({**details["topology"]["parallelism"], **parallelism}.values())
            capped = _capped(client, workers, count, len((details["assignment"] or {"slots": {}})["slots"]))
        client.rebalance(name, wait, workers, parallelism)
    click.echo(f"rebalancing topology '{name}'")
    if capped:
        click.echo(f"warning: {capped}", err=True)


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
    """Show the nimbus leader, standbys and supervisors, and the bad input each daemon refused."""
    with state.client() as client:
        c = client.cluster()
    click.echo(f"leader: {c['leader']}")
    click.echo(f"nimbuses: {', '.join(c['nimbuses'])}")
    click.echo(f"topologies: {c['topologies']}")
    for s in c["supervisors"]:
        logs = f", logs on port {s['log_port']}" if s.get("log_port") else ", no log endpoint"
        click.echo(f"supervisor {s['id']} on {s['host']}: {s['used']}/{s['slots']} slots used "
                   f"(ports {', '.join(str(p) for p in s.get('ports', []))}){logs}")
    for line in daemon_bad_input_lines(list(c.get("bad_input", []))):
        click.echo(line)
