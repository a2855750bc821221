"""Where the time goes per tuple: each stage of the hot path timed alone, on the real code.

``python -m benchmarks.breakdown [--tuples N]`` prints nanoseconds per tuple (CPU
time of this process, median of 5) for:

- emit: a bolt's ``emit([word])`` through its collector into a local queue
  (fields grouping, unanchored), including creating the Tuple;
- emit anchored: the same, anchored to a tracked input (new edge id, XOR);
- route: the fields grouping's choice alone;
- serialize: a remote sink batching a tuple (grouped per destination task and
  stream) and msgpack-packing the batch;
- transfer: ZeroMQ PUSH -> PULL of those frames between two sockets (one thread);
- deserialize: unpacking and validating a frame into Tuples in local queues;
- dispatch: the bolt executor taking a queued tuple and calling a no-op ``process``;
- ack: the same with auto-ack of a tracked tuple (XOR merged into the ack buffer);
- acker: the acker applying one ack entry (parallel root and XOR lists).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from collections.abc import Callable

import zmq

from streamgale import Bolt
from streamgale.build import describe
from streamgale.components import TopologyContext
from streamgale.runtime.acking import AckBuffer, AckerTable, new_id
from streamgale.runtime.executor import BoltExecutor, Collector, Routes, TaskRunner
from streamgale.runtime.routing import FieldsRouter
from streamgale.tuples import Tuple
from streamgale.wire.frames import Batch, RemoteSink, decode_frame

from .wordcount import sentences

INDEX = {"word": 0}


def words(n: int) -> list[str]:
    out: list[str] = []
    for (s,) in sentences(n // 10 + 1):
        out.extend(s.split())
    return out[:n]


class Noop(Bolt):
    outputs = ["word"]

    def process(self, tup):
        pass


def collector(sink: Callable, acks: AckBuffer | None) -> Collector:
    routes = Routes("split", 1, {"default": [FieldsRouter([2, 3, 4, 5], [0])]}, {}, {"default": INDEX},
                    {t: sink for t in (2, 3, 4, 5, 9)})
    return Collector(routes, None, acks)


def timed(fn: Callable[[], None], n: int) -> float:
    """ns per tuple: median CPU time of 5 runs of fn() over n tuples."""
    runs = []
    for _ in range(5):
        t0 = time.process_time()
        fn()
        runs.append((time.process_time() - t0) / n * 1e9)
    return statistics.median(runs)


def measure(n: int) -> dict[str, float]:
    ws = [[w] for w in words(n)]
    q: deque = deque()
    results: dict[str, float] = {}

    chunks = [ws[i:i + 1000] for i in range(0, len(ws), 1000)]  # queues stay short, as in a worker

    def emitting(col: Collector, current: Tuple | None) -> Callable[[], None]:
        def emit():
            col.current = current
            e = col.bolt_emit
            for chunk in chunks:
                for v in chunk:
                    e(v)
                q.clear()
        return emit

    results["emit"] = timed(emitting(collector(q.append, None), None), n)
    tracked = Tuple(["x"], "default", "spout", 7, INDEX, None, new_id(), new_id())
    results["emit anchored"] = timed(emitting(collector(q.append, AckBuffer((9,))), tracked), n)

    router = FieldsRouter([2, 3, 4, 5], [0])

    def route():
        c = router.choose
        for v in ws:
            c(v)
    results["route"] = timed(route, n)

    ctx = zmq.Context.instance()
    tuples = [Tuple(v, "default", "split", 1, INDEX, None) for v in ws]
    frames: list[bytes] = []
    batch = Batch()
    sinks = [RemoteSink(batch, t, 1000, lambda: frames.append(batch.encode())) for t in (2, 3)]

    def serialize():
        frames.clear()
        for i, tup in enumerate(tuples):
            sinks[i & 1](tup)
        if len(batch):
            frames.append(batch.encode())
    results["serialize"] = timed(serialize, n)

    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")

    def transfer():
        for f in frames:
            push.send(f, copy=False)
            pull.recv(copy=True)
    results["transfer"] = timed(transfer, n)
    push.close(0)
    pull.close(0)

    queues = {2: q.append, 3: q.append}

    def deserialize():
        for f in frames:
            decode_frame(f, queues, {1: "split"}, {"split": {"default": INDEX}}, 4000, lambda *a: None)
            q.clear()
    results["deserialize"] = timed(deserialize, n)

    def dispatch_with(acks: AckBuffer | None, anchored: bool) -> float:
        ctx_ = TopologyContext("t", "count", 2, 0, 1, None, {}, {})  # type: ignore[arg-type]
        runner = TaskRunner(2, Noop(), ctx_, collector(q.append, acks))
        ex = BoltExecutor("count", [runner], lambda *a: None, None)

        inputs = [Tuple(v, "default", "split", 1, INDEX, None, new_id() if anchored else 0, 5) for v in ws]
        batches = [inputs[i:i + 256] for i in range(0, len(inputs), 256)]

        def run():
            q = runner.queue
            for batch in batches:
                q.extend(batch)
                ex.step(256)
        return timed(run, n)
    results["dispatch"] = dispatch_with(None, False)
    results["ack"] = dispatch_with(AckBuffer((9,)), True) - results["dispatch"]

    table = AckerTable(30, now=0)
    roots, xors = [new_id() for _ in range(n)], [new_id() for _ in range(n)]

    def acker():
        table.apply([[], [], []], [roots, xors], [], {}, {})
    results["acker"] = timed(acker, n)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.breakdown")
    ap.add_argument("--tuples", type=int, default=200_000)
    args = ap.parse_args(argv)
    results = measure(args.tuples)
    print(f"per-tuple cost of each stage, {args.tuples:,} tuples (ns, CPU time, median of 5); "
          f"streamgale {describe()}")
    for stage, ns in results.items():
        print(f"{stage:<15} {ns:>8.0f}")


if __name__ == "__main__":
    main()
