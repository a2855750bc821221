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
- acker: the acker applying one ack entry.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from collections.abc import Callable

import msgpack
import zmq
from streamgale.worker.transport import FRAME_VERSION, TUPLES, Batch, Inbound, Transport

from streamgale import Bolt
from streamgale.components import TopologyContext
from streamgale.groupings import FieldsRouter
from streamgale.runtime.acking import AckBuffer, AckerTable, new_id
from streamgale.runtime.executor import BoltExecutor, Collector, Routes, TaskRunner
from streamgale.tuples import Tuple

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
    tracked = Tuple(["x"], "default", "spout", 7, INDEX, {new_id(): new_id()})
    results["emit anchored"] = timed(emitting(collector(q.append, AckBuffer((9,))), tracked), n)

    router = FieldsRouter([2, 3, 4, 5], [0])

    def route():
        c = router.choose
        for v in ws:
            c(v)
    results["route"] = timed(route, n)

    ctx = zmq.Context.instance()
    inbound = Inbound({2: q.append, 3: q.append}, {1: "split"}, {"split": {"default": INDEX}})
    tuples = [Tuple(v, "default", "split", 1, INDEX, None) for v in ws]
    frames: list[bytes] = []

    sender = Transport.__new__(Transport)  # only the batching half: no sockets
    sender._batches = {"peer": Batch()}
    sender.batch_size = 1000

    def flush(endpoint: str) -> None:
        batch = sender._batches[endpoint]
        frames.append(msgpack.packb([FRAME_VERSION, TUPLES, batch.entries()], use_bin_type=True))
        batch.clear()
    sender._flush = flush  # type: ignore[method-assign]
    sinks = [sender.sink(t, "peer") for t in (2, 3)]

    def serialize():
        frames.clear()
        for i, tup in enumerate(tuples):
            sinks[i & 1](tup)
        if sender._batches["peer"]:
            flush("peer")
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

    receiver = Transport.__new__(Transport)  # only the decoding half: no sockets
    receiver.inbound = inbound
    receiver.dropped_frames = receiver.dropped_entries = 0

    def deserialize():
        for f in frames:
            receiver._deliver(f)
            q.clear()
    results["deserialize"] = timed(deserialize, n)

    def dispatch_with(acks: AckBuffer | None, anchored: bool) -> float:
        ctx_ = TopologyContext("t", "count", 2, 0, 1, None, {}, {})  # type: ignore[arg-type]
        runner = TaskRunner(2, Noop(), ctx_, collector(q.append, acks))
        ex = BoltExecutor("count", [runner], lambda *a: None, None)

        inputs = [Tuple(v, "default", "split", 1, INDEX, {new_id(): 5} if anchored else None) for v in ws]
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
    entries = [[new_id(), new_id()] for _ in range(n)]

    def acker():
        table.apply([], entries, [], {}, {})
    results["acker"] = timed(acker, n)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.breakdown")
    ap.add_argument("--tuples", type=int, default=200_000)
    args = ap.parse_args(argv)
    results = measure(args.tuples)
    print(f"per-tuple cost of each stage, {args.tuples:,} tuples (ns, CPU time, median of 5)")
    for stage, ns in results.items():
        print(f"{stage:<15} {ns:>8.0f}")


if __name__ == "__main__":
    main()
