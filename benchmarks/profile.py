"""Where the local-mode word count spends its time, by cProfile (the suite's ``profile`` group).

``python -m benchmarks.profile [--sentences N]`` runs the local-mode word count
of ``benchmarks.wordcount`` (``sentences(N)``, unacked and acked) once each
under cProfile and prints, per mode, the share of the profiled time (each
function's own time, ``tottime``, summed) by bucket of the function's file:

- user code: ``benchmarks/`` (the split and count bolts);
- executor & collector: ``streamgale/runtime/executor.py``, ``loop.py``;
- routing: ``streamgale/groupings.py``, ``streamgale/runtime/routing.py``;
- tuples: ``streamgale/tuples.py``;
- acking: ``streamgale/runtime/acking.py``, ``acker.py``;
- framing/transport: ``streamgale/runtime/framing.py``, ``streamgale/wire/frames.py``,
  ``worker/transport.py`` (not used in local mode: no sockets);
- builtins: C functions (cProfile's file ``~``), e.g. ``dict.get``, ``len``;
- other: the rest (the standard library, the spout of ``streamgale.testing``, ...).

Plus the top 10 functions by own time. Only ``LocalCluster.run`` is profiled
(what ``local_word_count``'s rate measures), not building the topology.
cProfile sees Python functions and C functions called from Python only: a
module compiled to an extension (``.so``, mypyc) is invisible inside; a call
into it from Python shows as a built-in (counted here under that module's
bucket when its name tells the module or class), the rest of its time shows in
its callers. The header says which modules are compiled. Profiling slows the
run about 2x; the rate it prints is the profiled one.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import inspect
import json
import pstats
import re
import sysconfig
from pathlib import Path

from streamgale import build
from streamgale.build import source_path

from .wordcount import local_word_count, sentences

ROOT = Path(__file__).resolve().parent.parent
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()

#: Bucket -> files (relative to the repository root; a trailing "/" means everything under it).
BUCKETS: dict[str, tuple[str, ...]] = {
    "user code": ("benchmarks/",),
    "executor & collector": ("streamgale/runtime/executor.py", "streamgale/runtime/loop.py"),
    "routing": ("streamgale/groupings.py", "streamgale/runtime/routing.py"),
    "tuples": ("streamgale/tuples.py",),
    "acking": ("streamgale/runtime/acking.py", "streamgale/runtime/acker.py"),
    "framing/transport": ("streamgale/wire/frames.py", "worker/transport.py"),
}
BUILTINS, OTHER = "builtins", "other"
ORDER = (*BUCKETS, BUILTINS, OTHER)

_METHOD = re.compile(r"<method '[^']+' of '([\w.]+)' objects>")
_BUILTIN = re.compile(r"<built-in method ([\w.]+)>")


def compiled_modules() -> dict[str, str]:
    """Module -> bucket for each hot module imported from a compiled extension."""
    return {name: file_bucket(str(source_path(name))) for name in build.compiled_modules()}


def _compiled_names(compiled: dict[str, str]) -> dict[str, str]:
    """Dotted function names and class names defined in compiled modules -> their bucket."""
    names = {}
    for name, bucket in compiled.items():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if getattr(obj, "__module__", None) == name:
                names[f"{name}.{attr}"] = bucket
                if inspect.isclass(obj):
                    names[obj.__qualname__] = bucket
    return names


def file_bucket(path: str) -> str:
    """The bucket of a file path relative to the repository root (or absolute, outside it)."""
    for bucket, files in BUCKETS.items():
        if any(path.startswith(f) if f.endswith("/") else path == f for f in files):
            return bucket
    return OTHER


def bucket_of(file: str, function: str, compiled_names: dict[str, str]) -> str:
    """The bucket of one cProfile entry (its ``filename`` and ``funcname``)."""
    if file == "~" or function.startswith("{built-in"):
        match = _METHOD.fullmatch(function) or _BUILTIN.fullmatch(function)
        return compiled_names.get(match.group(1), BUILTINS) if match else BUILTINS
    path = Path(file)
    try:
        return file_bucket(path.resolve().relative_to(ROOT).as_posix())
    except (ValueError, OSError):
        return OTHER


def profiled_word_count(data: list[list[str]], acked: bool) -> tuple[float, pstats.Stats]:
    """``local_word_count`` with cProfile on around the run: (profiled words/s, the stats)."""
    profiler = cProfile.Profile()
    rate = local_word_count(data, acked=acked, profiler=profiler)
    return rate, pstats.Stats(profiler)


def summarize(stats: pstats.Stats, compiled_names: dict[str, str], top: int = 10) -> dict:
    """Seconds and percent of own time per bucket, and the ``top`` functions by own time."""
    entries = stats.stats  # (file, line, name) -> (primitive calls, calls, tottime, cumtime, callers)
    total = sum(v[2] for v in entries.values()) or 1e-12
    seconds = dict.fromkeys(ORDER, 0.0)
    rows = []
    for (file, line, function), (_cc, ncalls, tottime, cumtime, _callers) in entries.items():
        bucket = bucket_of(file, function, compiled_names)
        seconds[bucket] += tottime
        rows.append({"function": function, "file": _short(file), "line": line, "calls": ncalls,
                     "tottime_s": tottime, "cumtime_s": cumtime, "percent": 100 * tottime / total, "bucket": bucket})
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return {"total_s": total,
            "buckets": {b: {"seconds": s, "percent": 100 * s / total} for b, s in seconds.items()},
            "top": rows[:top]}


def _short(file: str) -> str:
    """A file relative to the repository root, or to the standard library ("stdlib/...")."""
    for base, prefix in ((ROOT, ""), (STDLIB, "stdlib/")):
        try:
            return prefix + Path(file).resolve().relative_to(base).as_posix()
        except (ValueError, OSError):
            pass
    return file


def profile(sentences_n: int) -> dict:
    """Profile both modes, print the summary, return the figures (the JSON report's "profile")."""
    compiled = compiled_modules()
    names = _compiled_names(compiled)
    data = sentences(sentences_n)
    modes = {}
    for mode, acked in (("unacked", False), ("acked", True)):
        rate, stats = profiled_word_count(data, acked)
        modes[mode] = {"profiled_words_per_s": rate, **summarize(stats, names)}
    print_profile(modes, compiled, sentences_n)
    return {"sentences": sentences_n, "compiled_modules": sorted(compiled), "modes": modes}


def print_profile(modes: dict[str, dict], compiled: dict[str, str], sentences_n: int) -> None:
    print(f"\nprofile: local word count, {sentences_n:,} sentences x 10 words, cProfile own time (tottime) by bucket")
    if compiled:
        print(f"compiled: {', '.join(sorted(compiled))}")
        print("compiled modules are invisible to cProfile; their time shows in their callers (a call into one "
              "from Python shows as a built-in, counted in its module's bucket; what it calls in compiled code "
              "counts there too)")
    else:
        print("no streamgale module is compiled (all are .py files): every Python function is seen")
    print(f"{'bucket':<22}" + "".join(f" {mode:>10}" for mode in modes))
    for bucket in ORDER:
        print(f"{bucket:<22}" + "".join(f" {m['buckets'][bucket]['percent']:>9.1f}%" for m in modes.values()))
    print(f"{'profiled s':<22}" + "".join(f" {m['total_s']:>10.2f}" for m in modes.values()))
    print(f"{'profiled words/s':<22}" + "".join(f" {m['profiled_words_per_s']:>10,.0f}" for m in modes.values()))
    for mode, m in modes.items():
        print(f"\ntop 10 functions by own time, {mode}:")
        print(f"{'own s':>7} {'%':>6} {'calls':>9}  {'bucket':<21} function")
        for r in m["top"]:
            where = f"{r['file']}:{r['line']}" if r["file"] != "~" else "built-in"
            print(f"{r['tottime_s']:>7.3f} {r['percent']:>5.1f}% {r['calls']:>9,}  {r['bucket']:<21} "
                  f"{r['function']} ({where})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=30_000)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    figures = profile(args.sentences)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
