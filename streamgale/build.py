"""Which build of the hot path is in use: compiled with mypyc, or pure Python.

The modules in :data:`HOT_MODULES` are plain, typed Python; ``setup.py``
compiles them with mypyc where a C compiler is available (``make build``, or a
wheel built by pip), and the same source runs interpreted where none is. A
compiled module is an extension file beside its ``.py`` source; Python imports
the extension first. Each compiled build records the sha256 of every source it
compiled (``streamgale/_build.json``), so a source edited after the build is
reported as stale instead of silently running the old compiled code.

Standard library only: ``setup.py`` reads :data:`HOT_MODULES` from here before
anything is installed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

HOT_MODULES = (
    "streamgale.tuples",
    "streamgale.runtime.routing",
    "streamgale.runtime.acking",
    "streamgale.runtime.executor",
    "streamgale.runtime.loop",
    "streamgale.wire.frames",
)
PACKAGE_DIR = Path(__file__).resolve().parent
RECORD = PACKAGE_DIR / "_build.json"


def source_path(module: str) -> Path:
    """The ``.py`` file of a hot module, relative to the package's parent directory."""
    return Path(*module.split(".")).with_suffix(".py")


def source_digests(root: Path) -> dict[str, str]:
    """module -> sha256 of its source, for the hot modules under ``root``."""
    return {m: hashlib.sha256((root / source_path(m)).read_bytes()).hexdigest() for m in HOT_MODULES}


def compiled_modules() -> list[str]:
    """The hot modules that were imported from a compiled extension."""
    out = []
    for name in HOT_MODULES:
        file = getattr(importlib.import_module(name), "__file__", "") or ""
        if any(file.endswith(suffix) for suffix in EXTENSION_SUFFIXES):
            out.append(name)
    return out


def stale_modules() -> list[str]:
    """Compiled hot modules whose source changed since they were compiled (rebuild them:
    ``make build``)."""
    try:
        recorded = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        recorded = {}
    current = source_digests(PACKAGE_DIR.parent)
    return [m for m in compiled_modules() if recorded.get(m) != current[m]]


def describe() -> str:
    """One line for ``streamgale --version``: which build runs, and whether it is current."""
    compiled = compiled_modules()
    if not compiled:
        return "pure Python (hot path interpreted)"
    if len(compiled) < len(HOT_MODULES):
        missing = sorted(set(HOT_MODULES) - set(compiled))
        text = f"partly compiled with mypyc (interpreted: {', '.join(missing)})"
    else:
        text = "compiled with mypyc (hot path native)"
    stale = stale_modules()
    if stale:
        text += f"; STALE, sources changed since the build: {', '.join(stale)} (run make build)"
    return text
