"""The file-system seam: the few operations the log (and the node's Raft storage) make.

Everything in `segments/` that touches a file goes through a `FileSystem`, so the same
code runs on the real disk (`OS`, the default everywhere: plain `os` calls, looked up
at call time so a test that patches `os.fsync` still sees every fsync) and on the
simulator's disk (`segments.simfs.SimFileSystem`), which loses what was not synced and
tears the last write when the simulated machine crashes. The operations are the POSIX
ones by name and meaning; files are addressed by descriptor as `os` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

Buffer = bytes | bytearray | memoryview


class FileSystem(Protocol):
    """What segments and `node.storage` need from a file system (POSIX semantics:
    data is durable after `fsync`/`fdatasync`, names after `fsync_directory`)."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        """A descriptor; `flags` are `os.O_*` (CREAT, TRUNC, APPEND, RDONLY, RDWR, WRONLY)."""
        ...

    def close(self, fd: int) -> None: ...

    def dup(self, fd: int) -> int:
        """Another descriptor of the same open file: it stays valid, and reads the same
        bytes, after `fd` is closed or the file unlinked (a `LogSlice` holds one)."""
        ...

    def pread(self, fd: int, n: int, pos: int) -> bytes: ...

    def write(self, fd: int, data: Buffer) -> int: ...

    def writev(self, fd: int, parts: Sequence[Buffer]) -> int: ...

    def pwritev(self, fd: int, parts: Sequence[Buffer], pos: int) -> int:
        """Write at `pos` (not moving the file position); the bytes written."""
        ...

    def allocate(self, fd: int, length: int) -> None:
        """Make the file `length` bytes long, the new bytes zeros with their disk space
        reserved (posix_fallocate); OSError where it cannot (a full disk)."""
        ...

    def fsync(self, fd: int) -> None: ...

    def fdatasync(self, fd: int) -> None: ...

    def size(self, fd: int) -> int:
        """The file's size (fstat)."""
        ...

    def ftruncate(self, fd: int, length: int) -> None: ...

    def unlink(self, path: str) -> None: ...

    def replace(self, src: str, dst: str) -> None:
        """Rename `src` over `dst` atomically (durable once the directory is fsynced)."""
        ...

    def listdir(self, path: str) -> list[str]: ...

    def makedirs(self, path: str) -> None:
        """Create the directory and its parents if missing."""
        ...

    def fsync_directory(self, path: str) -> None:
        """Make file creations, renames and deletions in `path` durable."""
        ...

    def read_file(self, path: str) -> bytes:
        """The whole file; FileNotFoundError if there is none."""
        ...


class OsFileSystem:
    """The real file system: thin calls into `os`."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def dup(self, fd: int) -> int:
        return os.dup(fd)

    def pread(self, fd: int, n: int, pos: int) -> bytes:
        return os.pread(fd, n, pos)

    def write(self, fd: int, data: Buffer) -> int:
        return os.write(fd, data)

    def writev(self, fd: int, parts: Sequence[Buffer]) -> int:
        return os.writev(fd, parts)

    def pwritev(self, fd: int, parts: Sequence[Buffer], pos: int) -> int:
        return os.pwritev(fd, parts, pos)

    def allocate(self, fd: int, length: int) -> None:
        size = os.fstat(fd).st_size
        if length > size:
            os.posix_fallocate(fd, size, length - size)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def fsync_directory(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()


OS: FileSystem = OsFileSystem()


def write_all(fs: FileSystem, fd: int, data: Buffer) -> None:
    """Write all of `data` (finishing a short write)."""
    view = memoryview(data)
    while view:
        view = view[fs.write(fd, view) :]
