"""Model bolts: `streamgale model update`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import click

from streamgale.inference import ModelError
from streamgale.inference.bolt import refusal

from .main import State, cli, fail

POLL_S = 0.5  # how often --wait asks nimbus for the tasks' model versions


@cli.group()
def model() -> None:
    """Manage the models of running model bolts (docs/ml.md)."""


@model.command("update")
@click.argument("name")
@click.argument("component")
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--wait", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="SECONDS",
              help="Wait this long for every task to serve the new version (0: do not wait).")
@click.pass_obj
def update(state: State, name: str, component: str, model_file: str, wait: float) -> None:
    """Replace the model of model bolt COMPONENT of running topology NAME with MODEL_FILE, live.

    The file is checked here (an .onnx file is loaded), uploaded to nimbus and
    fetched by every supervisor running the topology; each task loads it beside
    the model it serves and switches between batches, so no tuple is lost or
    failed. A task that cannot load it keeps the old model and reports why.

    Example: streamgale model update sensors score models/scorer-v2.onnx
    """
    with state.client() as client:  # the upload itself may take 60 s (Client.update_model)
        try:
            version = client.update_model(name, component, model_file)
        except ModelError as e:
            fail(f"{e}; the running model keeps serving")
        click.echo(f"uploaded {model_file} as version {version} of the model of '{component}' in '{name}'")
        if not wait:
            return
        deadline = time.monotonic() + wait
        versions: dict[int, int | None] = {}
        while time.monotonic() < deadline:
            versions = client.model_versions(name, component)
            refused = _refusal(client.info(name), component, version)
            if refused:
                fail(f"a task refused version {version}: {refused}", code=1)
            if versions and all(v == version for v in versions.values()):
                click.echo(f"all {len(versions)} task(s) of '{component}' serve version {version}")
                return
            time.sleep(POLL_S)  # polling nimbus, bounded by --wait
        behind = sorted(t for t, v in versions.items() if v != version)
        fail(f"after {wait:g} s, task(s) {behind} of '{component}' do not serve version {version} yet; "
             f"see `streamgale stats {name}`", code=1)


def _refusal(info: Mapping[str, Any], component: str, version: int) -> str | None:
    """The message of a task's refusal of ``version``, if one was reported."""
    for record in (info.get("errors") or {}).get(component, []):
        message = str(record.get("message", ""))
        if refusal(version) in message:
            return message.splitlines()[0]
    return None
