"""Finding free TCP ports on this host (development clusters, tests, benchmarks)."""

from __future__ import annotations

import random
import socket


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_range(count: int, host: str = "0.0.0.0") -> int:
    """A base port such that ``base .. base + count - 1`` are all free now."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        if all(port_is_free(host, port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")
