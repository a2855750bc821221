"""Reference scenario: the benchmark's word count in bytewax (``pip install -e '.[bench]'``).

The same sentences as ``benchmarks.wordcount.sentences(n, seed=42)`` ->
``flat_map`` split into words -> ``key_on`` the word (bytewax's exchange, the
fields grouping) -> ``stateful_map`` running count per word (every word emits
its running count) -> a sink that only counts the items it is given.

Every bytewax process runs in a fresh interpreter started here
(``python -m benchmarks.bytewax_wc --worker ...``), one worker each:

- ``processes == 1``: ``bytewax.testing.run_main`` (one worker in the process);
- ``processes > 1``: ``bytewax.testing.cluster_main`` in each process with the
  addresses of all of them, which is what ``python -m bytewax.run -a ... -i N``
  runs: a real multi-process timely cluster whose workers exchange keyed items
  over TCP.

The input is a ``DynamicSource``: each worker generates the full data set
before the run and reads only its share (``data[i::processes]``), so no
process re-reads another's sentences.

Rate = words / (last process's run end - first process's first input batch),
all measured inside the workers (``time.time()``, one machine), so interpreter
start, imports, data generation and cluster connection are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

_MISSING = "bytewax is not installed: pip install -e '.[bench]'"

#: Sentences per input batch. 1000 is bytewax's own default for its Kafka
#: source and clearly faster in bytewax than 100 or 10 (per-batch overhead).
BATCH = 1000


def _require_bytewax() -> None:
    try:
        import bytewax  # noqa: F401
    except ImportError as e:
        raise RuntimeError(_MISSING) from e


def _build_flow(share: list[str], batch: int, marks: dict, verify: bool):
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.inputs import DynamicSource, StatelessSourcePartition
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class _Part(StatelessSourcePartition):
        def __init__(self, items):
            self.items = items
            self.pos = 0

        def next_batch(self):
            if self.pos == 0 and "first_input" not in marks:
                marks["first_input"] = time.time()
            if self.pos >= len(self.items):
                raise StopIteration()
            out = self.items[self.pos:self.pos + batch]
            self.pos += batch
            return out

    class _Source(DynamicSource):
        # One worker per process: this process's share is the whole of what
        # this worker reads.
        def build(self, step_id, worker_index, worker_count):
            return _Part(share)

    class _CountPart(StatelessSinkPartition):
        def write_batch(self, items):
            marks["outputs"] += len(items)
            if verify:
                final = marks["final"]
                for word, count in items:
                    if count > final.get(word, 0):
                        final[word] = count

    class _Sink(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            return _CountPart()

    def running_count(state, _word):
        state = 1 if state is None else state + 1
        return state, state

    flow = Dataflow("bench_word_count")
    s = op.input("sentences", flow, _Source())
    s = op.flat_map("split", s, str.split)
    s = op.key_on("word", s, lambda w: w)
    s = op.stateful_map("count", s, running_count)
    op.output("out", s, _Sink())
    return flow


def _worker(args: argparse.Namespace) -> None:
    """One bytewax process: generate data, take our share, run, print a JSON line."""
    from bytewax.testing import cluster_main, run_main

    from benchmarks.wordcount import sentences

    addresses = args.addresses.split(";") if args.addresses else []
    n = max(1, len(addresses))
    share = [row[0] for row in sentences(args.sentences)[args.proc_id::n]]
    marks = {"outputs": 0, "final": {}}
    flow = _build_flow(share, args.batch, marks, args.verify)
    marks["called"] = time.time()
    if n == 1:
        run_main(flow)
    else:
        cluster_main(flow, addresses, args.proc_id)
    marks["end"] = time.time()
    marks["inputs"] = len(share)
    print("BYTEWAX-RESULT " + json.dumps(marks), flush=True)


def _free_ports(k: int) -> list[int]:
    socks = []
    try:
        for _ in range(k):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_bytewax(sentences: int, processes: int = 1, *, batch: int = BATCH,
                verify: bool = False, timeout: float = 600) -> dict:
    """Run the word count in ``processes`` bytewax processes; return the measurements.

    Keys: ``words`` (input words), ``outputs`` (count outputs over all
    processes), ``seconds`` (first input batch -> last run end), ``rate``
    (words/s), ``startup`` (first process start -> first input batch), and with
    ``verify`` ``final`` (word -> its last running count, merged).
    """
    _require_bytewax()
    if processes < 1:
        raise ValueError("processes must be >= 1")
    addresses = ";".join(f"127.0.0.1:{p}" for p in _free_ports(processes)) if processes > 1 else ""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    launched = time.time()
    procs = []
    for i in range(processes):
        cmd = [sys.executable, "-m", "benchmarks.bytewax_wc", "--worker",
               "--sentences", str(sentences), "--proc-id", str(i),
               "--addresses", addresses, "--batch", str(batch)]
        if verify:
            cmd.append("--verify")
        procs.append(subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results, errors = [], []
    deadline = time.monotonic() + timeout
    try:
        for i, p in enumerate(procs):
            try:
                out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"bytewax process {i} did not finish within {timeout}s")
            lines = [ln for ln in out.splitlines() if ln.startswith("BYTEWAX-RESULT ")]
            if p.returncode != 0 or not lines:
                errors.append(f"process {i} exited {p.returncode}:\n{err[-3000:]}")
            else:
                results.append(json.loads(lines[-1].split(" ", 1)[1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if errors:
        raise RuntimeError("bytewax run failed: " + "\n".join(errors))
    start = min(r["first_input"] for r in results)
    end = max(r["end"] for r in results)
    words = 10 * sentences
    out = {
        "words": words,
        "outputs": sum(r["outputs"] for r in results),
        "seconds": end - start,
        "rate": words / (end - start),
        "startup": start - launched,
    }
    if verify:
        final: dict[str, int] = {}
        for r in results:
            for w, c in r["final"].items():
                if w in final:  # a word is counted by exactly one worker
                    raise AssertionError(f"word {w!r} counted in more than one process")
                final[w] = c
        out["final"] = final
    return out


def bytewax_word_count(sentences: int, processes: int = 1) -> float:
    """Words per second of the bytewax word count over ``sentences`` sentences."""
    r = run_bytewax(sentences, processes)
    if r["outputs"] != r["words"]:
        raise AssertionError(f"bytewax emitted {r['outputs']} counts for {r['words']} words")
    return r["rate"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bytewax_wc")
    ap.add_argument("--sentences", type=int, default=200_000)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--proc-id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--addresses", default="", help=argparse.SUPPRESS)
    ap.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    r = run_bytewax(args.sentences, args.processes, batch=args.batch)
    print(f"bytewax p={args.processes}: {r['rate']:,.0f} words/s "
          f"({r['words']:,} words in {r['seconds']:.2f}s, startup {r['startup']:.2f}s)")


if __name__ == "__main__":
    main()
