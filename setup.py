"""Builds StreamGale with its hot path compiled by mypyc, or as pure Python.

Everything but the extension modules is configured in pyproject.toml. The hot
modules (``streamgale.build.HOT_MODULES``) are compiled when mypyc and a C
compiler are available, unless ``STREAMGALE_BUILD=pure``; a failed compile
falls back to pure Python with a warning (the same source runs interpreted).
``make build`` compiles in place for a checkout; ``make build BUILD=pure``
removes the compiled files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_streamgale_build", ROOT / "streamgale" / "build.py")
assert _spec is not None and _spec.loader is not None
build_info = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_info)


class OptionalBuildExt(build_ext):
    """Compile the hot modules; where that fails, warn and install pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure means the pure-Python build
            print(f"warning: compiling StreamGale's hot path failed ({exc}); installing pure Python",
                  file=sys.stderr)
            return
        record = ROOT / "streamgale" / "_build.json" if self.inplace else (
            Path(self.build_lib) / "streamgale" / "_build.json")
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(build_info.source_digests(ROOT), indent=1) + "\n")


def ext_modules() -> list:
    if os.environ.get("STREAMGALE_BUILD", "compiled") == "pure":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("warning: mypyc is not installed; installing StreamGale as pure Python", file=sys.stderr)
        return []
    sources = [str(build_info.source_path(m)) for m in build_info.HOT_MODULES]
    return mypycify(sources, opt_level="3", group_name="streamgale._hot")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
