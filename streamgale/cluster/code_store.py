"""Topology code packages and model files, stored in chunks (``code/<topology id>/``,
``models/<topology id>/<component>/``).

ZooKeeper keeps znodes small (1 MiB by default), so a package is split into
512 KiB ``chunk-NNNNN`` znodes; ``meta`` ({size, sha256, chunks}) is written
last and marks the package complete. Reads verify the sha256, so a torn or
corrupted package is an error, never bad code. Methods block on the storage
and raise ClusterStateError (or StorageError, for the caller to translate).
"""

from __future__ import annotations

import hashlib

import msgpack

from .errors import ClusterStateError
from .paths import Paths
from .storage import NoNode, Storage, delete_tree

CHUNK_SIZE = 512 * 1024
MAX_CODE_SIZE = 64 * 1024 * 1024


class CodeStore:
    """Blobs (code packages, model files) of at most ``max_size`` bytes each, one per folder:
    ``<folder>/meta`` and ``<folder>/chunk-NNNNN``. ``what`` names the blob in errors."""

    def __init__(self, storage: Storage, paths: Paths, max_size: int = MAX_CODE_SIZE):
        self._storage, self._paths, self.max_size = storage, paths, max_size

    def put(self, topology_id: str, data: bytes) -> str:
        """Store a code package (replacing any old one); returns its sha256 hex digest."""
        return self.put_blob(self._paths.code_package(topology_id), data, f"code package of topology {topology_id!r}")

    def get(self, topology_id: str) -> bytes:
        """The code package, verified against its sha256; ClusterStateError if absent or corrupt."""
        return self.get_blob(self._paths.code_package(topology_id), f"code package of topology {topology_id!r}")

    def delete(self, topology_id: str) -> None:
        """Remove the package; no-op if there is none."""
        delete_tree(self._storage, self._paths.code_package(topology_id))

    def put_blob(self, folder: str, data: bytes, what: str) -> str:
        if len(data) > self.max_size:
            raise ClusterStateError(f"{what} is {len(data)} bytes; the limit is {self.max_size} bytes")
        delete_tree(self._storage, folder)
        digest = hashlib.sha256(data).hexdigest()
        chunks = [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        for i, chunk in enumerate(chunks):
            self._storage.create(f"{folder}/chunk-{i:05d}", chunk, makepath=True)
        meta = {"format": 1, "size": len(data), "sha256": digest, "chunks": len(chunks)}
        self._storage.create(f"{folder}/meta", msgpack.packb(meta), makepath=True)  # last
        return digest

    def get_blob(self, folder: str, what: str) -> bytes:
        try:
            raw, _ = self._storage.get(f"{folder}/meta")
        except NoNode:
            raise ClusterStateError(f"no {what} is stored") from None
        try:
            meta = msgpack.unpackb(raw)
            size, digest, count = int(meta["size"]), str(meta["sha256"]), int(meta["chunks"])
        except Exception as e:  # noqa: BLE001 - malformed meta of any kind
            raise ClusterStateError(f"{what} has malformed metadata: {e}") from None
        if size > self.max_size or count > size // CHUNK_SIZE + 1:
            raise ClusterStateError(f"{what} claims {size} bytes in {count} chunks; "
                                    f"the limit is {self.max_size} bytes")
        try:
            data = b"".join(self._storage.get(f"{folder}/chunk-{i:05d}")[0] for i in range(count))
        except NoNode:
            raise ClusterStateError(f"{what} is missing a chunk") from None
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise ClusterStateError(f"{what} is corrupt: its sha256 does not match")
        return data
