"""The wheel holds every module, mapped under streamgale.*, and nothing at top level but streamgale."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT

# The compiled build is covered by `make build` and the whole suite; wheels here skip the compiler.
PURE = {**os.environ, "STREAMGALE_BUILD": "pure"}
MAPPING = {"streamgale": "streamgale", "nimbus": "streamgale/nimbus",
           "supervisor": "streamgale/supervisor", "worker": "streamgale/worker", "cli": "streamgale/cli"}


def test_wheel_contains_every_module_and_no_colliding_top_level(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300, env=PURE)
    (wheel,) = tmp_path.glob("streamgale-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    on_disk = {
        f"{installed}/{p.relative_to(ROOT / src).as_posix()}"
        for src, installed in MAPPING.items()
        for p in (ROOT / src).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk - names == set()
    assert "streamgale/py.typed" in names  # the package says it is typed (PEP 561)
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"streamgale"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "streamgale = streamgale.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_imports_without_top_level_daemons(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(ROOT)], check=True, capture_output=True, timeout=300, env=PURE)
    code = (
        "import importlib.util, streamgale.nimbus, streamgale.supervisor, streamgale.worker, streamgale.cli.main;"
        "print([m for m in ('nimbus','supervisor','worker','cli') if importlib.util.find_spec(m)])"
    )
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {code}"],
                         capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "[]"


def test_makefile_compiles_exactly_the_hot_modules():
    from streamgale.build import HOT_MODULES, source_path

    makefile = (ROOT / "Makefile").read_text()
    listed = makefile.split("HOT_SOURCES :=", 1)[1].split("\n\n", 1)[0].replace("\\", " ").split()
    assert listed == [str(source_path(m)) for m in HOT_MODULES]


def test_version_says_which_build_runs():
    from streamgale.build import HOT_MODULES, compiled_modules

    out = subprocess.run([sys.executable, "-m", "streamgale.cli", "--version"], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.startswith("streamgale 0.1.0, ")
    if compiled_modules() == list(HOT_MODULES):
        assert "compiled with mypyc" in out and "STALE" not in out
    else:
        assert "pure Python" in out
