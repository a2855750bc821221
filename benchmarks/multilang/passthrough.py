"""A pass-through multi-lang bolt on the bare protocol, as a library written for speed would be:
it reads what is there, answers all of it in one write. Argument: json or msgpack."""

import json
import os
import sys

import msgpack

FRAMING = sys.argv[1] if len(sys.argv) > 1 else "json"
IN, OUT = sys.stdin.fileno(), sys.stdout.fileno()


def messages():
    if FRAMING == "msgpack":
        unpacker = msgpack.Unpacker(raw=False)
        while data := os.read(IN, 1 << 16):
            unpacker.feed(data)
            yield list(unpacker)
        return
    buf = b""
    while data := os.read(IN, 1 << 16):
        parts = (buf + data).split(b"\nend\n")
        buf = parts.pop()
        yield [json.loads(p) for p in parts if p.strip()]


if FRAMING == "msgpack":
    encode = msgpack.Packer().pack
else:
    def encode(message, dumps=json.dumps):
        return dumps(message).encode() + b"\nend\n"


def write(data):
    view = memoryview(data)
    while view:
        view = view[os.write(OUT, view):]


first = True
for batch in messages():
    out = []
    for m in batch:
        if first:
            first = False
            open(os.path.join(m["pidDir"], str(os.getpid())), "w").close()
            out.append(encode({"pid": os.getpid()}))
        elif m["task"] == -1:
            out.append(encode({"command": "sync"}))
        else:
            out.append(encode({"command": "emit", "anchors": [m["id"]], "tuple": m["tuple"], "need_task_ids": False}))
            out.append(encode({"command": "ack", "id": m["id"]}))
    if out:
        write(b"".join(out))
