"""Loading a topology file: a Python module defining ``topology`` or ``build_topology(config)``."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from streamgale.config import Config
from streamgale.topology import Topology, TopologyError


class TopologyFileError(Exception):
    """The topology file could not be loaded; the message says where and why."""


def load_module(path: str | Path) -> ModuleType:
    """Import ``path`` as a module, with its directory first on ``sys.path``.

    The directory goes on ``sys.path`` so the file can import its neighbours,
    exactly as a worker does with an unpacked code package.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise TopologyFileError(f"topology file {path} does not exist")
    if path.suffix != ".py":
        raise TopologyFileError(f"topology file {path} must be a Python file ending in .py")
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered under its own name so pickle-free class paths (module.Class) resolve.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        # Keep only the frames from the user's file onwards.
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and (path.parent / "requirements.txt").is_file():
            hint = (f"\n{exc.name!r} is not installed here; the packages of requirements.txt are installed only "
                    "in the workers' environment on the cluster: import them inside prepare() or open() (or in "
                    "a module the topology file does not import), or install them here too")
        raise TopologyFileError(f"error while loading {path}:\n" + "".join(tb[-6:]).rstrip() + hint) from exc
    return module


def load_topology(path: str | Path, config: Config) -> Topology:
    """Load and validate the topology defined by the file at ``path``."""
    module = load_module(path)
    builder = getattr(module, "build_topology", None)
    topology = getattr(module, "topology", None)
    if builder is not None:
        try:
            topology = builder(config)
        except TopologyError:
            raise
        except Exception as exc:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
            raise TopologyFileError(f"build_topology in {path} raised:\n{tb.rstrip()}") from exc
    if topology is None:
        raise TopologyFileError(
            f"{path} defines neither a module-level 'topology' nor a function "
            "'build_topology(config)' returning a streamgale.Topology"
        )
    if not isinstance(topology, Topology):
        raise TopologyFileError(
            f"'topology' in {path} must be a streamgale.Topology, got {type(topology).__name__}"
        )
    topology.base_dir = str(Path(path).resolve().parent)
    return topology.validate()
