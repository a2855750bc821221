"""Reference scenario: the hardware ceiling for moving the benchmark's words between processes.

Two processes (``multiprocessing`` with the spawn start method) and nothing
else: the sender splits the sentences of ``benchmarks.wordcount.sentences(n)``
into words and sends them as msgpack frames of 1000 words over a ZeroMQ PUSH
socket (TCP on 127.0.0.1, as the worker transport uses); the receiver PULLs,
unpacks each frame and counts the words, and stops on an empty end frame.

Rate = words / (receiver's last receive - sender's first send), both
``time.time()`` on this machine; process start, imports and data generation
are not counted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import time

import msgpack
import zmq

#: Words per frame.
FRAME = 1000
_END = b""


def _receiver(port_q, result_q) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    port_q.put(port)
    unpackb = msgpack.unpackb
    recv = pull.recv
    words = 0
    while True:
        frame = recv(copy=True)
        if frame == _END:
            break
        words += len(unpackb(frame))
        last = time.time()
    result_q.put(("received", words, last if words else time.time()))
    pull.close(linger=0)
    ctx.term()


def _sender(sentences: int, port: int, result_q) -> None:
    from benchmarks.wordcount import sentences as make_sentences

    data = make_sentences(sentences)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    packb = msgpack.packb
    send = push.send
    batch: list[str] = []
    first = time.time()
    for (sentence,) in data:
        batch.extend(sentence.split())
        if len(batch) >= FRAME:
            send(packb(batch[:FRAME]))
            del batch[:FRAME]
    while batch:
        send(packb(batch[:FRAME]))
        del batch[:FRAME]
    send(_END)
    result_q.put(("sent", first))
    push.close(linger=-1)  # deliver everything before exiting
    ctx.term()


def _get(q, procs, deadline: float):
    """The next message on ``q``, failing fast if a child dies (e.g. an unguarded caller ``__main__``)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError("zmq ceiling timed out")
        try:
            return q.get(timeout=min(left, 0.5))
        except queue.Empty:
            for p in procs:
                if p is not None and p.exitcode not in (None, 0):
                    raise RuntimeError(f"zmq ceiling {p.name} exited {p.exitcode}") from None


def zmq_ceiling(sentences: int, timeout: float = 600) -> float:
    """Words per second moved between two processes as msgpack batches over ZeroMQ."""
    ctx = multiprocessing.get_context("spawn")
    port_q, result_q = ctx.Queue(), ctx.Queue()
    receiver = ctx.Process(target=_receiver, args=(port_q, result_q), daemon=True)
    receiver.start()
    sender = None
    try:
        deadline = time.monotonic() + timeout
        port = _get(port_q, (receiver,), deadline)
        sender = ctx.Process(target=_sender, args=(sentences, port, result_q), daemon=True)
        sender.start()
        results = {}
        while len(results) < 2:
            msg = _get(result_q, (receiver, sender), deadline)
            results[msg[0]] = msg[1:]
        words, last = results["received"]
        (first,) = results["sent"]
        if words != 10 * sentences:
            raise AssertionError(f"received {words} words, expected {10 * sentences}")
        return words / (last - first)
    finally:
        for p in (sender, receiver):
            if p is not None:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
                    p.join()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ceiling")
    ap.add_argument("--sentences", type=int, default=200_000)
    args = ap.parse_args(argv)
    print(f"zmq ceiling: {zmq_ceiling(args.sentences):,.0f} words/s")


if __name__ == "__main__":
    main()
