"""Free space on a node's data disk, checked before a write is accepted.

A produce that would fill the disk is refused with a typed, retriable STORAGE_ERROR
while there is still room for what Raft itself must write (votes, no-ops, markers,
the tail of what is in flight), so reads, retention and every other partition go on
and a full disk never turns into a write failure deep in the replication path.
"""

from __future__ import annotations

import os
import time

from client.errors import StorageError

CHECK_EVERY_S = 1.0


class DiskSpace:
    def __init__(self, path: str, min_free_bytes: int) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self._free = -1
        self._checked = -CHECK_EVERY_S

    def free_bytes(self) -> int:
        """Bytes available to the node, re-read at most once a second (statvfs is cheap,
        but not per batch)."""
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY_S:
            st = os.statvfs(self.path)
            self._free, self._checked = st.f_bavail * st.f_frsize, now
        return self._free

    def check(self, incoming: int) -> None:
        free = self.free_bytes()
        if free - incoming < self.min_free_bytes:
            raise StorageError(
                f"the data disk has {free >> 20} MiB free, below the {self.min_free_bytes >> 20} MiB this node keeps "
                "for replication; writes resume once retention or an operator frees space"
            )
