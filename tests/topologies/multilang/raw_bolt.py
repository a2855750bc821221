"""A multi-lang bolt written against the bare protocol, for the tests: what it does is its
first argument; the framing its second (json or msgpack). State that must outlive one
process (misbehave only once) is a marker file in the directory named by the third.

- pass: emit each tuple's values anchored to it, then ack it.
- setup: write the handshake it got to setup.json (in the marker directory), then pass.
- hang: after 20 tuples stop reading and answer nothing (once).
- garbage: write a line that is no message after 20 tuples (once).
- exit: exit with code 3 after 20 tuples (once).
- commands: for each tuple, log at every level, report an error, a metric, then pass.
- task_ids: emit each tuple with need_task_ids left true, read the task ids, emit them on
  stream "ids", ack.
- undeclared: emit on a stream the component does not declare, then pass.
- ticks: emit ["tick"] for each tick tuple (and pass the rest).
"""

import json
import os
import sys
import time

import msgpack

MODE = sys.argv[1]
FRAMING = sys.argv[2] if len(sys.argv) > 2 else "json"
MARKS = sys.argv[3] if len(sys.argv) > 3 else "."
stdin = sys.stdin.buffer
stdout = sys.stdout.buffer
unpacker = msgpack.Unpacker(raw=False)
pending = []


def read():
    if FRAMING == "msgpack":
        while True:
            for message in unpacker:
                return message
            data = os.read(stdin.fileno(), 65536)
            if not data:
                sys.exit(0)
            unpacker.feed(data)
    lines = []
    while True:
        line = stdin.readline()
        if not line:
            sys.exit(0)
        if line == b"end\n":
            return json.loads(b"".join(lines))
        lines.append(line)


def send(message):
    if FRAMING == "msgpack":
        stdout.write(msgpack.packb(message))
    else:
        stdout.write(json.dumps(message).encode() + b"\nend\n")
    stdout.flush()


def once(name):
    """True the first time this is asked in the marker directory, by any process."""
    path = os.path.join(MARKS, name)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def read_task_ids():
    while True:
        message = read()
        if isinstance(message, list):
            return message
        pending.append(message)


setup = read()
open(os.path.join(setup["pidDir"], str(os.getpid())), "w").close()
if MODE == "setup":
    with open(os.path.join(MARKS, "setup.json"), "w") as f:
        json.dump(setup, f)
send({"pid": os.getpid()})
seen = 0
while True:
    tup = pending.pop(0) if pending else read()
    if tup["task"] == -1 and tup["stream"] == "__heartbeat":
        send({"command": "sync"})
        continue
    if tup["stream"] == "__tick":
        if MODE == "ticks":
            send({"command": "emit", "tuple": ["tick", tup["comp"]], "need_task_ids": False})
        continue
    seen += 1
    if seen == 20 and MODE == "hang" and once("hung"):
        time.sleep(3600)
    if seen == 20 and MODE == "garbage" and once("garbage"):
        stdout.write(b"hello from a print statement\n")
        stdout.flush()
    if seen == 20 and MODE == "exit" and once("exited"):
        print("exiting on purpose", file=sys.stderr, flush=True)
        sys.exit(3)
    if MODE == "commands":
        for level in range(5):
            send({"command": "log", "msg": f"level {level} says {tup['tuple'][0]}", "level": level})
        send({"command": "error", "msg": f"trouble with {tup['tuple'][0]}"})
        send({"command": "metrics", "name": "seen", "params": 1})
    if MODE == "undeclared":
        send({"command": "emit", "stream": "nowhere", "anchors": [tup["id"]], "tuple": tup["tuple"]})
        read_task_ids()
    if MODE == "task_ids":
        send({"command": "emit", "anchors": [tup["id"]], "tuple": tup["tuple"]})
        send({"command": "emit", "stream": "ids", "anchors": [tup["id"]],
              "tuple": [tup["tuple"][0], json.dumps(read_task_ids())], "need_task_ids": False})
    else:
        send({"command": "emit", "anchors": [tup["id"]], "tuple": tup["tuple"], "need_task_ids": False})
    send({"command": "ack", "id": tup["id"]})
