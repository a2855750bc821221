"""Metrics from the command line: `stats` (a table per component) and `monitor` (live throughput)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from .client_commands import call
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


def stats_table(stats: dict[str, Any], errors: dict[str, list[dict[str, Any]]], window: str) -> str:
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
        out.append(f"worker {w['host']}:{w['port']} pid {w['pid']}: cpu {w['cpu_percent']}%, "
                   f"{w['rss_mb']} MB resident, up {w['uptime_s']} s")
    for component, records in sorted(errors.items()):
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
    data = call(state, "topology_stats", name)
    errors = call(state, "topology_info", name).get("errors", {})
    if as_json:
        click.echo(json.dumps({**data, "errors": errors}, indent=2, default=str))
    else:
        click.echo(stats_table(data, errors, window))


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
    before = _emitted(call(state, "topology_stats", name), component)
    if component and component not in before:
        raise click.ClickException(f"topology '{name}' has no component '{component}' with metrics yet")
    start = time.monotonic()
    taken = 0
    try:
        while samples is None or taken < samples:
            time.sleep(interval)  # the sampling period the user asked for
            now = _emitted(call(state, "topology_stats", name), component)
            rates = "  ".join(f"{c} {max(0, now.get(c, 0) - before.get(c, 0)) / interval:,.0f}/s"
                              for c in sorted(now))
            click.echo(f"{time.monotonic() - start:7.1f}s  {rates}")
            before = now
            taken += 1
    except KeyboardInterrupt:
        pass
