"""Finding free TCP ports on this host (development clusters, tests, benchmarks).

Ports are picked below the kernel's ephemeral range where it can tell it
(``/proc/sys/net/ipv4/ip_local_port_range`` on Linux): a port the kernel
hands out for outgoing connections (kazoo's, ZeroMQ's) may be taken by one
between the moment it is found free and the moment a daemon binds it, which
made a nimbus fail to start now and then ("Address already in use").
"""

from __future__ import annotations

import random
import socket
import threading

LOWEST = 20000  # below: ports that other software on a developer's machine tends to use
_handed_out: set[int] = set()  # picked in this process already: never twice
_lock = threading.Lock()
_rng = random.Random()  # its own state: a test seeding the module-level random changes nothing here


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_low() -> int:
    """The lowest port the kernel uses for outgoing connections (65536 if it cannot say)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 65536


def _pick(count: int, host: str) -> int | None:
    high = min(ephemeral_low(), 65536) - count
    if high - LOWEST < 1000:
        return None
    for _ in range(500):
        base = _rng.randrange(LOWEST, high)
        ports = range(base, base + count)
        with _lock:
            if any(p in _handed_out for p in ports):
                continue
            if all(port_is_free(host, p) for p in ports):
                _handed_out.update(ports)
                return base
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now (below the ephemeral range where possible)."""
    port = _pick(1, host)
    if port is not None:
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_range(count: int, host: str = "0.0.0.0") -> int:
    """A base port such that ``base .. base + count - 1`` are all free now."""
    base = _pick(count, host)
    if base is None:
        raise RuntimeError(f"no {count} consecutive free ports found")
    return base
