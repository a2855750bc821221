"""Keys and ZooKeeper credentials for a secured cluster on this machine (tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamgale.security import KeyStore


def secured_settings(directory: Path, zookeeper_credentials: str = "streamgale:dev") -> tuple[KeyStore, dict[str, Any]]:
    """Create in ``directory`` a keys directory (the cluster key pair and an authorized ``daemon`` key)
    and a ZooKeeper credentials file (``user:password``, mode 600); return the key store and the
    settings the daemons run with (``security.*``, identity ``daemon``)."""
    keys = KeyStore(directory / "keys")
    keys.init()
    keys.create("daemon", "daemon")
    credentials = directory / "zk-credentials"
    credentials.write_text(zookeeper_credentials + "\n")
    credentials.chmod(0o600)
    return keys, {"security.enabled": True, "security.keys_dir": str(keys.dir), "security.identity": "daemon",
                  "security.zookeeper_credentials": str(credentials)}
