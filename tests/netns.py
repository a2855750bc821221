"""Network-namespace harness for fault-injection tests.

A :class:`NetLab` builds a small private network on the local machine::

    root namespace                       lab namespaces
    ──────────────                       ──────────────
    bridge <prefix><tag>br  10.B.C.1/24 ─┬─ veth ── eth0 10.B.C.11  (hosts[0])
                                         ├─ veth ── eth0 10.B.C.12  (hosts[1])
                                         └─ ...

* The /24 is picked at random from 10.64.0.0/10 among subnets that do not
  overlap any address or route already present on the machine.
* Every host can reach every other host and the root namespace (the bridge
  address, and via the default route any other root address); the root
  namespace can reach every host.  A server in the root namespace bound to
  ``0.0.0.0`` or :attr:`NetLab.bridge_address` is reachable from every host.
* :meth:`Host.cut` isolates a host with iptables rules inside its namespace
  (both directions, established connections included); :meth:`Host.heal`
  removes exactly those rules.
* :meth:`NetLab.close` (also run on ``with`` exit, and at interpreter exit as a
  last resort) SIGKILLs every process still inside the lab's namespaces and
  deletes the namespaces, veths and bridge.  It only touches objects the lab
  created; all names carry a random suffix.

Requires root, ``ip`` (iproute2) and ``iptables``; :func:`unavailable_reason`
says why the harness cannot be used (``None`` when it can).

Example::

    with NetLab(hosts=2) as lab:
        a, b = lab.hosts
        server = a.popen([sys.executable, "server.py", a.address])
        b.run(["curl", f"http://{a.address}:8000/"], check=True)
        a.cut()    # a is now unreachable
        a.heal()
"""

from __future__ import annotations

import atexit
import functools
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

__all__ = ["Host", "NetLab", "NetLabError", "unavailable_reason"]

#: Pool the lab subnets are drawn from (10.64.0.0 - 10.127.255.255).
SUBNET_POOL = ipaddress.IPv4Network("10.64.0.0/10")
#: Last octet of the first host's address; host i gets FIRST_HOST_OCTET + i.
FIRST_HOST_OCTET = 11
#: Most hosts a lab can have (addresses .11 - .210).
MAX_HOSTS = 200
#: Longest accepted ``prefix`` so that every interface name fits in IFNAMSIZ-1 = 15.
MAX_PREFIX_LEN = 5
#: Name of the lab-side interface inside each namespace.
HOST_INTERFACE = "eth0"

_TAG_LEN = 6  # random hex suffix appended to the prefix
_DEFAULT_PREFIX = "sg"
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]*$")
_CUT_COMMENT = "netlab-cut"


class NetLabError(RuntimeError):
    """A lab could not be built or torn down."""


def _run(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short administrative command; raise NetLabError with its stderr on failure."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetLabError(
            f"{' '.join(args)!r} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc


@functools.cache
def unavailable_reason() -> str | None:
    """Return ``None`` if :class:`NetLab` can be used here, else a human-readable reason.

    Checks: Linux, root, ``ip`` and ``iptables`` on PATH, and that a scratch
    namespace can be created, given a bridge and a veth pair, and can run
    iptables.  The scratch namespace lives only for the duration of the probe.
    The result is cached.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"sgprobe{secrets.token_hex(4)}"
    try:
        _run(["ip", "netns", "add", probe])
    except (NetLabError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _run(["ip", "-n", probe, "link", "add", "probebr", "type", "bridge"])
        _run(["ip", "-n", probe, "link", "add", "probev0", "type", "veth",
              "peer", "name", "probev1"])
        _run(["ip", "netns", "exec", probe, "iptables", "-w", "-S"])
    except (NetLabError, OSError, subprocess.SubprocessError) as exc:
        return f"network namespace is not usable: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _root_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace has an address in or a route to."""
    networks: list[ipaddress.IPv4Network] = []
    for line in _run(["ip", "-o", "-4", "addr", "show"]).stdout.splitlines():
        match = re.search(r"\binet (\S+)", line)
        if match:
            networks.append(ipaddress.IPv4Interface(match.group(1)).network)
    for line in _run(["ip", "-4", "route", "show", "table", "all"]).stdout.splitlines():
        words = line.split()
        if words and words[0] in (
            "unicast", "local", "broadcast", "multicast", "anycast",
            "blackhole", "unreachable", "prohibit", "throw", "nat",
        ):
            words = words[1:]
        if not words or words[0] == "default":
            continue
        try:
            networks.append(ipaddress.IPv4Network(words[0], strict=False))
        except ValueError:
            continue
    return networks


def _pick_subnet() -> ipaddress.IPv4Network:
    """A random /24 in SUBNET_POOL that overlaps nothing configured on the machine."""
    used = _root_networks()
    candidates = list(SUBNET_POOL.subnets(new_prefix=24))
    for subnet in random.sample(candidates, 200):
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise NetLabError(f"no free /24 found in {SUBNET_POOL}")


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def _netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join("/run/netns", name))


def _chain_is_open(chain: str) -> bool:
    """True if root-namespace iptables ``chain`` (filter table) is policy ACCEPT with no rules."""
    proc = _run(["iptables", "-w", "-S", chain], check=False)
    if proc.returncode != 0:
        return True  # no usable iptables in the root namespace: nothing to work around
    return proc.stdout.split() == ["-P", chain, "ACCEPT"]


class Host:
    """One lab host: a network namespace with a single interface on the lab bridge.

    Created by :class:`NetLab`; do not instantiate directly.
    """

    #: Namespace name (as listed by ``ip netns list``).
    name: str
    #: The host's IPv4 address on the lab subnet, e.g. ``"10.77.3.11"``.
    address: str
    #: Name of the lab interface inside the namespace.
    interface: str

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.interface = HOST_INTERFACE
        self._procs: list[subprocess.Popen[Any]] = []
        self._cut = False

    def __repr__(self) -> str:
        return f"Host(name={self.name!r}, address={self.address!r})"

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` prefixed so that it runs inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``args`` inside the namespace; ``kwargs`` go to :class:`subprocess.Popen`.

        The returned process is the command itself (``ip netns exec`` execs, it
        does not fork).  Any process still running in the namespace is killed
        by :meth:`NetLab.close`, and processes started here are also reaped.
        """
        proc = subprocess.Popen(self.command(args), **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``args`` inside the namespace to completion; ``kwargs`` go to :func:`subprocess.run`."""
        return subprocess.run(self.command(args), **kwargs)

    def _cut_rules(self) -> list[list[str]]:
        return [
            ["INPUT", "!", "-i", "lo", "-m", "comment", "--comment", _CUT_COMMENT, "-j", "DROP"],
            ["OUTPUT", "!", "-o", "lo", "-m", "comment", "--comment", _CUT_COMMENT, "-j", "DROP"],
        ]

    def cut(self) -> None:
        """Isolate the host: DROP every packet in and out except on loopback.

        The rules go first in the namespace's INPUT and OUTPUT chains, so
        established connections stop delivering data too (TCP peers see
        silence, not resets; TCP connects from inside the host time out).
        UDP sends from inside the host fail fast with EPERM.  Idempotent.
        """
        if self._cut:
            return
        for rule in self._cut_rules():
            _run(self.command(["iptables", "-w", "-I", rule[0], "1", *rule[1:]]))
            self._cut = True  # so heal() removes a half-applied cut

    def heal(self) -> None:
        """Remove exactly the rules :meth:`cut` added (no-op if not cut)."""
        if not self._cut:
            return
        for rule in self._cut_rules():
            # check=False: after a half-applied cut() the second rule is absent.
            _run(self.command(["iptables", "-w", "-D", *rule]), check=False)
        self._cut = False

    @property
    def is_cut(self) -> bool:
        """Whether :meth:`cut` is in effect."""
        return self._cut


class NetLab:
    """A bridge in the root namespace plus ``hosts`` namespaces attached to it.

    Use as a context manager (or call :meth:`close`); teardown runs even if the
    body raised, and a lab whose construction fails cleans up after itself.

    ``prefix`` (default ``"sg"``; lowercase alphanumeric, at most 5 chars)
    starts every name the lab creates; a random 6-hex-digit tag follows it,
    e.g. namespaces ``sg3fa9c1h0``, bridge ``sg3fa9c1br``, veths ``sg3fa9c1v0``.
    """

    #: Address of the bridge in the root namespace, e.g. ``"10.77.3.1"``.
    bridge_address: str
    #: The hosts, in order; ``hosts[i].address`` ends in ``.{11 + i}``.
    hosts: list[Host]
    #: The lab's subnet, e.g. ``IPv4Network("10.77.3.0/24")``.
    subnet: ipaddress.IPv4Network
    #: Name of the bridge in the root namespace.
    bridge: str

    def __init__(self, hosts: int, prefix: str | None = None) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be between 1 and {MAX_HOSTS}, got {hosts}")
        prefix = _DEFAULT_PREFIX if prefix is None else prefix
        if not _PREFIX_RE.match(prefix) or len(prefix) > MAX_PREFIX_LEN:
            raise ValueError(
                f"prefix must be lowercase alphanumeric, start with a letter and be at most "
                f"{MAX_PREFIX_LEN} characters, got {prefix!r}"
            )
        reason = unavailable_reason()
        if reason is not None:
            raise NetLabError(f"network namespaces unavailable: {reason}")

        self.base = f"{prefix}{secrets.token_hex(_TAG_LEN // 2)}"
        self.bridge = f"{self.base}br"
        self.hosts = []
        self._veths: list[str] = []  # root-side veth names we created
        self._namespaces: list[str] = []  # namespaces we created
        self._bridge_created = False
        self._root_rules: list[list[str]] = []  # root iptables rules we inserted
        self._closed = False
        atexit.register(self.close)
        try:
            self._build(hosts)
        except BaseException:
            self.close()
            raise

    # -- construction -----------------------------------------------------------------

    def _build(self, count: int) -> None:
        for _ in range(5):
            self.subnet = _pick_subnet()
            gateway = self.subnet[1]
            self.bridge_address = str(gateway)
            if not self._bridge_created:
                _run(["ip", "link", "add", self.bridge, "type", "bridge"])
                self._bridge_created = True
            _run(["ip", "addr", "add", f"{gateway}/24", "dev", self.bridge])
            # Another lab (another process) may have picked the same subnet concurrently.
            if self._subnet_used_elsewhere():
                _run(["ip", "addr", "flush", "dev", self.bridge])
                continue
            break
        else:
            raise NetLabError("could not claim a free subnet")
        _run(["ip", "link", "set", self.bridge, "up"])
        self._open_root_firewall()

        for i in range(count):
            ns = f"{self.base}h{i}"
            veth = f"{self.base}v{i}"
            address = str(self.subnet[FIRST_HOST_OCTET + i])
            _run(["ip", "netns", "add", ns])
            self._namespaces.append(ns)
            _run(["ip", "link", "add", veth, "type", "veth",
                  "peer", "name", HOST_INTERFACE, "netns", ns])
            self._veths.append(veth)
            _run(["ip", "link", "set", veth, "master", self.bridge, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", HOST_INTERFACE])
            _run(["ip", "-n", ns, "link", "set", HOST_INTERFACE, "up"])
            _run(["ip", "-n", ns, "route", "add", "default", "via", self.bridge_address])
            self.hosts.append(Host(ns, address))

    def _subnet_used_elsewhere(self) -> bool:
        for line in _run(["ip", "-o", "-4", "addr", "show"]).stdout.splitlines():
            fields = line.split()
            match = re.search(r"\binet (\S+)", line)
            if match and fields[1] != self.bridge:
                if ipaddress.IPv4Interface(match.group(1)).network.overlaps(self.subnet):
                    return True
        return False

    def _open_root_firewall(self) -> None:
        """Let lab traffic through a restrictive root-namespace filter table.

        With br_netfilter loaded (``net.bridge.bridge-nf-call-iptables = 1``)
        host-to-host frames crossing the bridge traverse the root FORWARD chain,
        so a DROP policy (Docker sets one) would silently cut hosts off from
        each other; INPUT/OUTPUT govern host <-> root traffic.  For each chain
        that is not plain "policy ACCEPT, no rules" we insert one ACCEPT rule
        matching only our bridge, and delete it again on close.  Nothing is
        done when the chains are already open.
        """
        if shutil.which("iptables") is None:
            return
        rules: list[list[str]] = []
        if _bridge_nf_call_iptables() and not _chain_is_open("FORWARD"):
            rules.append(["FORWARD", "-i", self.bridge, "-o", self.bridge])
        if not _chain_is_open("INPUT"):
            rules.append(["INPUT", "-i", self.bridge])
        if not _chain_is_open("OUTPUT"):
            rules.append(["OUTPUT", "-o", self.bridge])
        for rule in rules:
            full = [*rule, "-m", "comment", "--comment", f"netlab {self.base}", "-j", "ACCEPT"]
            _run(["iptables", "-w", "-I", full[0], "1", *full[1:]])
            self._root_rules.append(full)

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """Tear the lab down; idempotent.

        Order: SIGKILL every process in each namespace (``ip netns pids``, until
        none is left), reap processes started with :meth:`Host.popen`, delete the
        veths and the bridge, remove root iptables rules, delete the namespaces.
        Every step runs even if an earlier one failed; failures are raised
        together afterwards as :class:`NetLabError`.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        errors: list[str] = []

        for ns in self._namespaces:
            try:
                _kill_namespace_processes(ns)
            except Exception as exc:  # keep tearing down
                errors.append(f"killing processes in {ns}: {exc}")
        for host in self.hosts:
            for proc in host._procs:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    errors.append(f"process {proc.pid} in {host.name} did not exit")

        links = [*self._veths, *([self.bridge] if self._bridge_created else [])]
        for link in links:
            failed = _run(["ip", "link", "del", "dev", link], check=False).returncode != 0
            if failed and _link_exists(link):
                errors.append(f"could not delete link {link}")
        for rule in self._root_rules:
            proc = _run(["iptables", "-w", "-D", *rule], check=False)
            if proc.returncode:
                errors.append(f"could not delete root iptables rule {rule}: {proc.stderr.strip()}")
        for ns in self._namespaces:
            if _run(["ip", "netns", "del", ns], check=False).returncode and _netns_exists(ns):
                errors.append(f"could not delete namespace {ns}")
        if errors:
            raise NetLabError("NetLab teardown incomplete: " + "; ".join(errors))

    def __enter__(self) -> NetLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        subnet = str(getattr(self, "subnet", "?"))
        return f"NetLab(bridge={self.bridge!r}, subnet={subnet!r}, hosts={self.hosts!r})"


def _bridge_nf_call_iptables() -> bool:
    """Whether bridged IPv4 frames traverse iptables in this namespace (br_netfilter)."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            return f.read().strip() == "1"
    except OSError:
        return False  # br_netfilter not loaded


def _namespace_pids(ns: str) -> list[int]:
    proc = _run(["ip", "netns", "pids", ns], check=False)
    if proc.returncode != 0:
        return []
    return [int(word) for word in proc.stdout.split()]


def _kill_namespace_processes(ns: str, timeout: float = 5.0) -> None:
    """SIGKILL everything in ``ns`` until ``ip netns pids`` reports nothing."""
    deadline = time.monotonic() + timeout
    while True:
        pids = _namespace_pids(ns)
        if not pids:
            return
        if time.monotonic() > deadline:
            raise NetLabError(f"processes {pids} in {ns} survived SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
