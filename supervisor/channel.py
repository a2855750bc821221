"""The supervisor's end of the local channel to its workers (:mod:`streamgale.wire.channel`).

One ROUTER socket, owned by the supervisor's main thread. Each worker's
DEALER connects with its slot port as routing id, so a message names its
slot; a restarted worker (or one adopted by a restarted supervisor) takes
over its id (``ROUTER_HANDOVER``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq

from streamgale.security import Security
from streamgale.security.access import CHANNEL
from streamgale.wire import channel

log = logging.getLogger("streamgale.supervisor")


def channel_port(local_dir: Path) -> int:
    """The port this node's channel used last time (0 if none), so workers that outlive a
    supervisor restart find the new supervisor where they left the old one."""
    try:
        return int((local_dir / "channel-port").read_text().strip())
    except (OSError, ValueError):
        return 0


class SupervisorChannel:
    def __init__(self, context: zmq.Context, url: str, local_dir: Path | None = None,
                 security: Security | None = None):
        """Bind ``url``; ``tcp://127.0.0.1:0`` binds the port in ``local_dir`` when it is free,
        else a free one (recorded there for the next start). With ``security`` on, only daemon
        keys (this node's workers) get past the handshake."""
        self.sock = context.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if security is not None:
            security.serve(self.sock, CHANNEL)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.sock.setsockopt(zmq.MAXMSGSIZE, channel.MAX_CHANNEL_BYTES)
        if url.startswith("tcp://") and url.endswith(":0"):
            host = url[len("tcp://"):-2]
            remembered = channel_port(local_dir) if local_dir is not None else 0
            port = 0
            if remembered:
                try:
                    self.sock.bind(f"tcp://{host}:{remembered}")
                    port = remembered
                except zmq.ZMQError:
                    log.warning("channel port %d is taken; workers still running will be restarted", remembered)
            if not port:
                port = self.sock.bind_to_random_port(f"tcp://{host}")
            if local_dir is not None:
                (local_dir / "channel-port").write_text(f"{port}\n")
            self.url = f"tcp://{host}:{port}"
        else:
            self.sock.bind(url)
            self.url = url
        self.malformed = 0

    def poll(self, timeout: float) -> list[tuple[int, channel.Message]]:
        """Wait up to ``timeout`` s for messages; return (slot port, message) for each."""
        out: list[tuple[int, channel.Message]] = []
        if not self.sock.poll(int(timeout * 1000)):
            return out
        for _ in range(1000):
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                if len(parts) != 2:
                    raise channel.ChannelError(f"expected 2 frames, got {len(parts)}")
                out.append((int(parts[0].decode()), channel.decode(parts[1])))
            except (ValueError, UnicodeDecodeError) as e:
                self.malformed += 1
                log.warning("ignored a malformed message on the worker channel: %s", e)
        return out

    def send(self, port: int, message: channel.Message) -> None:
        try:
            self.sock.send_multipart([str(port).encode(), channel.encode(message)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # not connected (yet): the worker's next beat asks again

    def close(self) -> None:
        self.sock.close(0)
