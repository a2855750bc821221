"""Observing a running topology: `stats`, `monitor`, `logs` and `set-log-level`."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from streamgale.client import Client, NimbusError, TopologyDetails, WorkerLog, did_you_mean, tail_lines
from streamgale.config import LOG_LEVELS
from streamgale.wire.protocol import DEFAULT_STATS_WINDOW, STATS_WINDOWS

from .main import State, cli, fail

WINDOW_NAMES = {"600": "10m", "10800": "3h", "86400": "1d", "all": "all time"}
assert list(WINDOW_NAMES) == [name for name, _ in STATS_WINDOWS]  # the windows nimbus keeps, named
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
    bad = bad_input_line(stats.get("bad_input") or {})
    if bad:
        out.append(bad)
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


def bad_input_line(totals: dict[str, Any]) -> str:
    """``stats``: what the topology's workers refused on their ports over its life, if anything."""
    frames, entries, keys = (int(totals.get(k) or 0) for k in ("dropped_frames", "dropped_entries", "denied_keys"))
    if not (frames or entries or keys):
        return ""
    denied = f", {keys:,} peers' keys denied" if keys else ""
    return f"bad input: {frames:,} frames dropped, {entries:,} entries dropped{denied}"


def daemon_bad_input_lines(entries: list[Any]) -> list[str]:
    """``cluster``: each daemon's refused input since it started (``cluster_info``'s ``bad_input``)."""
    lines = []
    for d in entries:
        where = f"{d.get('daemon')} {d.get('id')}" + (f" on {d['host']}" if d.get("daemon") == "supervisor" else "")
        text = (f"bad input at {where}: {d.get('rejected_requests', 0):,} rejected requests, "
                f"{d.get('refused_handshakes', 0):,} refused handshakes, {d.get('denied_keys', 0):,} denied keys")
        if "malformed_messages" in d:
            text += f", {d['malformed_messages']:,} malformed worker-channel messages"
        lines.append(text)
    return lines


@cli.command()
@click.argument("name")
@click.option("--window", type=click.Choice(list(WINDOW_NAMES)), default=DEFAULT_STATS_WINDOW, show_default=True,
              help="Seconds covered (600, 10800, 86400) or all time.")
@click.option("--json", "as_json", is_flag=True, help="Print every window, task and worker as JSON.")
@click.option("-m", "--component", help="Only this component (its row, tasks and errors).")
@click.pass_obj
def stats(state: State, name: str, window: str, as_json: bool, component: str | None) -> None:
    """Show NAME's metrics per component: emitted, acked, latencies, capacity, last errors."""
    with state.client() as client:
        data = client.stats(name)
        if component is not None:
            check_component(name, component, client.info(name))
            data = only_component(data, component)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(stats_table(data, window))


def check_component(name: str, component: str, info: TopologyDetails) -> None:
    """Exit 1 naming its components (and the close ones) unless topology ``name``, whose
    :meth:`Client.info` is ``info``, has ``component``."""
    components = sorted((info["topology"].get("spec") or {}).get("components") or {})
    if component not in components:
        own = [c for c in components if not c.startswith("__")]  # not the system ones (__acker)
        fail(f"topology '{name}' has no component '{component}'{did_you_mean(component, own)} "
             f"(its components: {', '.join(own)})", code=1)


def only_component(stats: dict[str, Any], component: str) -> dict[str, Any]:
    """``stats`` (of :meth:`Client.stats`) cut down to one component: its row, tasks and errors."""
    return {**stats, "components": {c: v for c, v in stats["components"].items() if c == component},
            "tasks": {t: v for t, v in stats.get("tasks", {}).items() if v.get("component") == component},
            "errors": {c: v for c, v in stats["errors"].items() if c == component}}


def _emitted(stats: dict[str, Any], component: str | None) -> dict[str, int]:
    out = {component: 0} if component else {}  # 0 until its first metrics arrive
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
        if component is not None:
            check_component(name, component, client.info(name))
        before = _emitted(client.stats(name), component)
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


def _logger_level(_ctx: click.Context, _param: click.Parameter,
                  value: str | None) -> tuple[str, str, float | None] | None:
    """LOGGER=LEVEL[:SECONDS] (Storm's ``-l`` syntax) -> (logger, level, seconds or None)."""
    if value is None:
        return None
    logger, sep, level = value.partition("=")
    level, colon, seconds = level.partition(":")
    if not sep or not level.strip():
        raise click.BadParameter(f"expected LOGGER=LEVEL, e.g. streamgale.transport=DEBUG, got {value!r}")
    if level.strip().upper() not in LOG_LEVELS:
        raise click.BadParameter(f"LEVEL must be one of {', '.join(LOG_LEVELS)} (any case), got {level.strip()!r}")
    timeout = None
    if colon:
        try:
            timeout = float(seconds)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout < float("inf"):
            raise click.BadParameter(f"the timeout after LEVEL: must be a number of seconds > 0, got {seconds!r}")
    return logger.strip(), level.strip().upper(), timeout


@cli.command("set-log-level")
@click.argument("name")
@click.argument("setting", metavar="LOGGER=LEVEL", required=False, callback=_logger_level)
@click.option("-t", "--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Revert LOGGER to its own level after this many seconds (Storm's LOGGER=LEVEL:SECONDS, "
                   "also accepted). Default: keep the level until reset.")
@click.option("-r", "--reset", "resets", multiple=True, metavar="LOGGER",
              help="Put LOGGER back to the level the workers had before set-log-level changed it "
                   "(repeatable; \"root\" for the root logger).")
@click.pass_obj
def set_log_level(state: State, name: str, setting: tuple[str, str, float | None] | None, timeout: float | None,
                  resets: tuple[str, ...]) -> None:
    """Set a logger's level in every worker of NAME, live (LOGGER "root" or "" for the root logger),
    for a while (-t) or until reset (-r LOGGER, which needs no LOGGER=LEVEL), as Storm's set_log_level.

    \b
    Examples:
      streamgale set-log-level word-count streamgale.transport=DEBUG
      streamgale set-log-level word-count root=DEBUG -t 60       # back to the workers' own after 60 s
      streamgale set-log-level word-count -r streamgale.transport
    """
    if setting is None and not resets:
        raise click.UsageError("give LOGGER=LEVEL to set a level, or -r LOGGER to reset one")
    if setting is None and timeout is not None:
        raise click.UsageError("-t needs a LOGGER=LEVEL to set")
    if setting is not None and setting[2] is not None and timeout is not None:
        raise click.UsageError("give the timeout once: either LOGGER=LEVEL:SECONDS or -t SECONDS")
    with state.client() as client:
        if setting is not None:
            logger, level, seconds = setting
            seconds = timeout if seconds is None else seconds
            client.set_log_level(name, logger, level, timeout=seconds)
            until = f" for {seconds:g} s, then back to the workers' own level" if seconds is not None else ""
            click.echo(f"log level of {logger or 'root'} in '{name}' set to {level}{until}")
        for logger in resets:
            client.set_log_level(name, logger, reset=True)
            click.echo(f"log level of {logger or 'root'} in '{name}' reset to the workers' own level")


@cli.command()
@click.argument("name")
@click.option("--component", "-m", help="Only the workers running this component.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("-n", "--lines", "lines", type=click.IntRange(min=0), default=40, show_default=True,
              help="How many of the last lines of each log to show first (like tail -n).")
@click.pass_obj
def logs(state: State, name: str, component: str | None, follow: bool, lines: int) -> None:
    """Print (or follow) the logs of NAME's workers, read through their supervisors."""
    with state.client(timeout=5) as client:
        if component is not None:
            check_component(name, component, client.info(name))
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
                        if first:
                            offsets[log.worker], shown = _tail(client, log, lines)
                        else:
                            chunk = client.read_log(log, offsets[log.worker], 1 << 20)
                            offsets[log.worker] = chunk["offset"]
                            shown = chunk["data"].decode(errors="replace").splitlines()
                    except NimbusError as e:
                        click.echo(f"[{log.worker}] cannot read its log: {e}", err=True)
                        continue
                    for line in shown:
                        click.echo(f"[{log.worker}] {line}")
                first = False
                if not follow:
                    return
                time.sleep(1)  # follow mode polls once a second
        except KeyboardInterrupt:
            pass


def _tail(client: Client, log: WorkerLog, lines: int) -> tuple[int, list[str]]:
    """The last ``lines`` lines of ``log`` and the offset its end is at (:func:`tail_lines`)."""
    return tail_lines(lambda offset, size: client.read_log(log, offset, size), lines)


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
        check_component(name, component, info)
    record = info["topology"]
    spec = TopologySpec.from_dict(record["spec"])
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
