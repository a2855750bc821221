"""Observing a running topology: `stats`, `monitor`, `logs` and `set-log-level`."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from streamgale.client import NimbusError

from .main import State, cli

WINDOW_NAMES = {"600": "10m", "10800": "3h", "86400": "1d", "all": "all time"}
COLUMNS = (("emitted", "EMITTED"), ("transferred", "TRANSFERRED"), ("executed", "EXECUTED"), ("acked", "ACKED"),
           ("failed", "FAILED"), ("execute_latency_ms", "EXEC MS"), ("capacity", "CAPACITY"),
           ("complete_latency_ms", "COMPLETE MS"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def stats_table(stats: dict[str, Any], window: str) -> str:
    rows = [["COMPONENT", "KIND", "TASKS", "QUEUE", *(title for _, title in COLUMNS)]]
    for name, comp in sorted(stats["components"].items(), key=lambda kv: (kv[1]["kind"] != "spout", kv[0])):
        w = comp["windows"].get(window, {})
        rows.append([name, comp["kind"], str(len(comp["tasks"])), str(comp["queue"]),
                     *(_cell(w.get(key)) for key, _ in COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) if i < 2 else cell.rjust(width) for i, (cell, width) in
                       enumerate(zip(row, widths))) for row in rows]
    top = stats.get("topology", {})
    head = (f"topology {top.get('name')} ({top.get('id')}): {top.get('status')}, {top.get('workers')} workers, "
            f"window {WINDOW_NAMES.get(window, window)}")
    out = [head, *lines]
    for w in stats.get("workers", []):
        transport = w.get("transport") or {}
        dropped = (f", dropped {transport.get('dropped_frames', 0)} malformed frames and "
                   f"{transport.get('dropped_entries', 0)} tuples on its port"
                   if transport.get("dropped_frames") or transport.get("dropped_entries") else "")
        out.append(f"worker {w['host']}:{w['port']} pid {w['pid']}: cpu {w['cpu_percent']}%, "
                   f"{w['rss_mb']} MB resident, up {w['uptime_s']} s{dropped}")
    for task, t in sorted(stats.get("tasks", {}).items(), key=lambda kv: int(kv[0])):
        if t.get("metrics"):
            shown = ", ".join(f"{k} {_cell(v)}" for k, v in sorted(t["metrics"].items()))
            out.append(f"task {task} ({t['component']}): {shown}")
    for component, records in sorted(stats["errors"].items()):
        last = records[-1]
        first_line = str(last.get("message", "")).splitlines()[0] if last.get("message") else ""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(last.get("time", 0))))
        out.append(f"last error in {component} (task {last.get('task')}, {last.get('host')}:{last.get('port')}, "
                   f"{when}; {len(records)} recent): {first_line}")
    return "\n".join(out)


@cli.command()
@click.argument("name")
@click.option("--window", type=click.Choice(list(WINDOW_NAMES)), default="600", show_default=True,
              help="Seconds covered (600, 10800, 86400) or all time.")
@click.option("--json", "as_json", is_flag=True, help="Print every window, task and worker as JSON.")
@click.pass_obj
def stats(state: State, name: str, window: str, as_json: bool) -> None:
    """Show NAME's metrics per component: emitted, acked, latencies, capacity, last errors."""
    with state.client() as client:
        data = client.stats(name)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(stats_table(data, window))


def _emitted(stats: dict[str, Any], component: str | None) -> dict[str, int]:
    out = {}
    for name, comp in stats["components"].items():
        if comp["kind"] == "acker" or (component and name != component):
            continue
        out[name] = comp["windows"].get("all", {}).get("emitted", 0) or 0
    return out


@cli.command()
@click.argument("name")
@click.option("-i", "--interval", type=click.FloatRange(min=1), default=4.0, show_default=True,
              metavar="SECONDS", help="Seconds between samples.")
@click.option("-m", "--component", help="Only this component.")
@click.option("-n", "--samples", type=click.IntRange(min=1), help="Stop after this many samples (default: Ctrl-C).")
@click.pass_obj
def monitor(state: State, name: str, interval: float, component: str | None, samples: int | None) -> None:
    """Print NAME's throughput (tuples emitted per second per component) every interval, live.

    Metrics reach nimbus every 2 s, so an interval below that repeats values.
    """
    with state.client() as client:
        before = _emitted(client.stats(name), component)
        if component and component not in before:
            raise click.ClickException(f"topology '{name}' has no component '{component}' with metrics yet")
        start = time.monotonic()
        taken = 0
        try:
            while samples is None or taken < samples:
                time.sleep(interval)  # the sampling period the user asked for
                now = _emitted(client.stats(name), component)
                rates = "  ".join(f"{c} {max(0, now.get(c, 0) - before.get(c, 0)) / interval:,.0f}/s"
                                  for c in sorted(now))
                click.echo(f"{time.monotonic() - start:7.1f}s  {rates}")
                before = now
                taken += 1
        except KeyboardInterrupt:
            pass


@cli.command("set-log-level")
@click.argument("name")
@click.argument("setting", metavar="LOGGER=LEVEL")
@click.pass_obj
def set_log_level(state: State, name: str, setting: str) -> None:
    """Set a logger's level in every worker of NAME, live (LOGGER "root" or "" for the root logger).

    Example: streamgale set-log-level word-count streamgale.transport=DEBUG
    """
    logger, sep, level = setting.partition("=")
    if not sep or not level:
        raise click.UsageError(f"expected LOGGER=LEVEL, got {setting!r}")
    with state.client() as client:
        client.set_log_level(name, logger.strip(), level.strip())
    click.echo(f"log level of {logger.strip() or 'root'} in '{name}' set to {level.strip().upper()}")


@cli.command()
@click.argument("name")
@click.option("--component", "-m", help="Only the workers running this component.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("-n", "--bytes", "size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="How much of the end of each log to show first.")
@click.pass_obj
def logs(state: State, name: str, component: str | None, follow: bool, size: int) -> None:
    """Print (or follow) the logs of NAME's workers, read through their supervisors."""
    with state.client(timeout=5) as client:
        sources = []
        for log in client.worker_logs(name, component):
            if log.endpoint is None:
                click.echo(f"(no log access to {log.worker}: its supervisor is not reachable)", err=True)
            else:
                sources.append(log)
        if component and not sources:
            raise click.ClickException(f"no worker of '{name}' runs component '{component}'")
        offsets: dict[str, int] = {}
        first = True
        try:
            while True:
                for log in sources:
                    try:
                        chunk = client.read_log(log, offsets.get(log.worker, -1), size if first else 1 << 20)
                    except NimbusError as e:
                        click.echo(f"[{log.worker}] cannot read its log: {e}", err=True)
                        continue
                    offsets[log.worker] = chunk["offset"]
                    text = chunk["data"].decode(errors="replace")
                    if first and chunk["offset"] - len(chunk["data"]) > 0:
                        text = text.split("\n", 1)[-1]  # start at a whole line
                    for line in text.splitlines():
                        click.echo(f"[{log.worker}] {line}")
                first = False
                if not follow:
                    return
                time.sleep(1)  # follow mode polls once a second
        except KeyboardInterrupt:
            pass


@cli.command("state")
@click.argument("name")
@click.argument("component")
@click.option("--task", "tasks", type=int, multiple=True, help="Only this task (repeatable); default: every task.")
@click.pass_obj
def state_command(state: State, name: str, component: str, tasks: tuple[int, ...]) -> None:
    """Print the committed state of stateful COMPONENT of topology NAME, per task, as JSON.

    Reads the backend the topology runs with (topology.state.*); for the sqlite backend, run it
    on the node whose file you want to read.
    """
    from streamgale.state import StateError, committed_state
    from streamgale.topology import layout_tasks
    from streamgale.wire.spec import TopologySpec

    with state.client() as client:
        info = client.info(name)
    record = info["topology"]
    spec = TopologySpec.from_dict(record["spec"])
    if component not in spec.components:
        raise click.ClickException(f"topology '{name}' has no component '{component}' "
                                   f"(components: {', '.join(sorted(spec.components))})")
    ids = layout_tasks({n: c.tasks for n, c in spec.components.items()})[component]
    unknown = sorted(set(tasks) - set(ids))
    if unknown:
        raise click.ClickException(f"component '{component}' has tasks {list(ids)}, not {unknown}")
    config = state.base_config().merged(record.get("config") or {}, f"config of topology '{name}'")
    try:
        found = committed_state(record["name"], component, tasks or ids, config)
    except StateError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({str(t): {json.dumps(k) if not isinstance(k, str) else k: v for k, v in kv.items()}
                           for t, kv in found.items()}, indent=2, sort_keys=True, default=repr))
