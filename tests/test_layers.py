"""The import layers: user API and runtime never reach into the daemons; one module talks to kazoo."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

DAEMONS = ("streamgale.nimbus", "streamgale.supervisor", "streamgale.worker", "streamgale.cli")


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def is_daemon(module: str) -> bool:
    """``module`` is a daemon or inside one (streamgale.cli.main; not streamgale.client, the user API)."""
    return any(module == d or module.startswith(d + ".") for d in DAEMONS)


def modules(*folders: str) -> list[Path]:
    return [p for f in folders for p in (ROOT / f).rglob("*.py") if "__pycache__" not in p.parts]


def test_user_api_runtime_cluster_and_wire_never_import_a_daemon():
    api = [p for p in (ROOT / "streamgale").glob("*.py")]
    internal = modules("streamgale/runtime", "streamgale/cluster", "streamgale/wire", "streamgale/ui", "streamgale/state")
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imports(p) if is_daemon(m)) for p in api + internal}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_supervisor_does_not_import_worker_internals():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imports(p) if m.startswith("streamgale.worker"))
                 for p in modules("supervisor")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_exactly_one_module_imports_kazoo():
    users = sorted(str(p.relative_to(ROOT)) for p in modules("streamgale", "nimbus", "supervisor", "worker", "cli")
                   if any(m == "kazoo" or m.startswith("kazoo.") for m in imports(p)))
    assert users == ["streamgale/cluster/zk_storage.py"]


def test_the_package_is_typed():
    assert (ROOT / "streamgale" / "py.typed").is_file()
