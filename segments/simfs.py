"""A simulated file system for the Raft simulator: deterministic, in memory, and as
forgetful as POSIX allows when the machine crashes.

Each file (inode) keeps two images: what was written (the page cache, which reads see)
and what was last made durable by `fsync`/`fdatasync`. The directory namespace keeps
two maps the same way: names as they are, and names as of the last `fsync_directory`
of their directory (creations, renames and unlinks are durable only then). `crash()`
keeps the durable names, and for each surviving file its durable bytes, plus:

- after unsynced appends, or writes into space allocated (zeros) and made durable
  before, a prefix of them cut at an arbitrary byte (a torn write), the durable zeros
  after it kept;
- after another unsynced truncation or overwrite, either the old durable bytes
  (nothing reached the disk) or the new bytes up to an arbitrary cut past what both
  share.

Every choice comes from the `rng` passed in (anything with `randrange`), so a seed
replays the same crash. Directories themselves are durable once made (the simulator
makes each node's directory once, at start). Descriptors die with the crash.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from typing import Protocol

from segments.fs import Buffer


class _Rng(Protocol):
    def randrange(self, start: int, stop: int) -> int: ...


class _Inode:
    __slots__ = ("data", "durable", "dirty_from")

    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = b""
        self.dirty_from: int | None = None  # the lowest byte changed since the last sync

    def changed(self, pos: int) -> None:
        self.dirty_from = pos if self.dirty_from is None else min(self.dirty_from, pos)


class _Fd:
    __slots__ = ("inode", "append", "path", "pos")

    def __init__(self, inode: _Inode, append: bool, path: str) -> None:
        self.inode = inode
        self.append = append
        self.path = path
        self.pos = 0


class SimFileSystem:
    """`segments.fs.FileSystem` in memory, with `crash()` (see the module docstring)."""

    def __init__(self, rng: _Rng) -> None:
        self.rng = rng
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._dirs: set[str] = {"/", "."}
        self._fds: dict[int, _Fd] = {}
        self._next_fd = 3
        self.torn = 0  #: crashes that cut an unsynced write mid-way
        self.lost = 0  #: crashes that lost unsynced bytes or names

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _norm(path: str) -> str:
        return posixpath.normpath(os.fspath(path))

    def _fd(self, fd: int) -> _Fd:
        try:
            return self._fds[fd]
        except KeyError:
            raise OSError(9, "Bad file descriptor (closed, or lost in a crash)") from None

    def _parent_exists(self, path: str) -> None:
        if posixpath.dirname(path) not in self._dirs and posixpath.dirname(path) != "":
            raise FileNotFoundError(2, "No such directory", path)

    # -- FileSystem -------------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        path = self._norm(path)
        inode = self._names.get(path)
        if inode is None:
            if not flags & os.O_CREAT:
                raise FileNotFoundError(2, "No such file", path)
            self._parent_exists(path)
            inode = self._names[path] = _Inode()
        elif flags & os.O_TRUNC:
            del inode.data[:]
            inode.changed(0)
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = _Fd(inode, bool(flags & os.O_APPEND), path)
        return fd

    def close(self, fd: int) -> None:
        self._fd(fd)
        del self._fds[fd]

    def dup(self, fd: int) -> int:
        f = self._fd(fd)
        new = self._next_fd
        self._next_fd += 1
        self._fds[new] = _Fd(f.inode, f.append, f.path)
        return new

    def pread(self, fd: int, n: int, pos: int) -> bytes:
        return bytes(self._fd(fd).inode.data[pos : pos + n])

    def write(self, fd: int, data: Buffer) -> int:
        f = self._fd(fd)
        buf = f.inode.data
        pos = len(buf) if f.append else f.pos
        f.inode.changed(min(pos, len(buf)))
        if pos > len(buf):
            buf += bytes(pos - len(buf))
        buf[pos : pos + len(data)] = data
        f.pos = pos + len(data)
        return len(data)

    def writev(self, fd: int, parts: Sequence[Buffer]) -> int:
        return sum(self.write(fd, p) for p in parts)

    def pwritev(self, fd: int, parts: Sequence[Buffer], pos: int) -> int:
        inode = self._fd(fd).inode
        buf, data = inode.data, b"".join(parts)
        inode.changed(min(pos, len(buf)))
        if pos > len(buf):
            buf += bytes(pos - len(buf))
        buf[pos : pos + len(data)] = data
        return len(data)

    def allocate(self, fd: int, length: int) -> None:
        inode = self._fd(fd).inode
        if length > len(inode.data):  # (unsynced, as any write: a crash may keep part)
            inode.changed(len(inode.data))
            inode.data += bytes(length - len(inode.data))

    def fsync(self, fd: int) -> None:
        inode = self._fd(fd).inode
        inode.durable = bytes(inode.data)
        inode.dirty_from = None

    fdatasync = fsync

    def size(self, fd: int) -> int:
        return len(self._fd(fd).inode.data)

    def ftruncate(self, fd: int, length: int) -> None:
        inode = self._fd(fd).inode
        data = inode.data
        inode.changed(min(length, len(data)))
        if length <= len(data):
            del data[length:]
        else:
            data += bytes(length - len(data))

    def unlink(self, path: str) -> None:
        path = self._norm(path)
        if self._names.pop(path, None) is None:
            raise FileNotFoundError(2, "No such file", path)

    def replace(self, src: str, dst: str) -> None:
        src, dst = self._norm(src), self._norm(dst)
        inode = self._names.pop(src, None)
        if inode is None:
            raise FileNotFoundError(2, "No such file", src)
        self._names[dst] = inode

    def listdir(self, path: str) -> list[str]:
        path = self._norm(path)
        if path not in self._dirs:
            raise FileNotFoundError(2, "No such directory", path)
        return sorted(posixpath.basename(p) for p in self._names if posixpath.dirname(p) == path)

    def makedirs(self, path: str) -> None:
        path = self._norm(path)
        while path not in self._dirs and path not in ("", "/", "."):
            self._dirs.add(path)
            path = posixpath.dirname(path)

    def fsync_directory(self, path: str) -> None:
        path = self._norm(path)
        for name in [p for p in self._durable_names if posixpath.dirname(p) == path]:
            del self._durable_names[name]
        for name, inode in self._names.items():
            if posixpath.dirname(name) == path:
                self._durable_names[name] = inode

    def read_file(self, path: str) -> bytes:
        inode = self._names.get(self._norm(path))
        if inode is None:
            raise FileNotFoundError(2, "No such file", path)
        return bytes(inode.data)

    # -- the crash --------------------------------------------------------------------

    def crash(self) -> None:
        """The machine stops: keep what was durable (and what a torn write left of
        what was not); every descriptor is gone."""
        self._fds.clear()
        if self._names != self._durable_names:
            self.lost += 1
        self._names = dict(self._durable_names)
        seen: set[int] = set()
        for inode in self._names.values():
            if id(inode) in seen:
                continue
            seen.add(id(inode))
            data, durable = bytes(inode.data), inode.durable
            if data == durable:
                continue
            self.lost += 1
            shared = 0
            limit = min(len(data), len(durable), len(data) if inode.dirty_from is None else inode.dirty_from)
            while shared < limit and data[shared] == durable[shared]:
                shared += 1
            if not any(durable[shared:]):  # unsynced appends, or writes into allocated zeros
                keep = self.rng.randrange(shared, len(data) + 1)  # a prefix survives
                survivor = data[:keep] + durable[keep:]  # (durable allocated zeros stay)
                if shared < keep < len(data):
                    self.torn += 1
            elif self.rng.randrange(0, 2) == 0:  # an unsynced truncation or rewrite: all old,
                survivor = durable
            else:  # or new up to a cut
                keep = self.rng.randrange(shared, len(data) + 1)
                survivor = data[:keep]
                if len(durable) < keep < len(data):
                    self.torn += 1
            inode.data = bytearray(survivor)
            inode.durable = survivor
            inode.dirty_from = None

    # -- what a crash now would leave (for checkers) ----------------------------------

    def durable_bytes(self, path: str) -> bytes | None:
        """The bytes of `path` a crash now surely leaves (None: its name is not durable),
        without crashing: the simulator's checker reads `raft-state` this way to see the
        term and vote a node could not forget."""
        inode = self._durable_names.get(self._norm(path))
        return None if inode is None else inode.durable

    def durable_prefix(self, path: str, length: int) -> bool:
        """Whether a crash now keeps the first `length` bytes of `path` exactly as reads
        see them now: its name durable (as this file) and those bytes fsynced since they
        were last written. Whatever `crash()` draws, such a prefix survives."""
        path = self._norm(path)
        inode = self._names.get(path)
        if inode is None or self._durable_names.get(path) is not inode:
            return False
        durable = inode.durable
        return len(durable) >= length and inode.data[:length] == durable[:length]

    # -- for tests --------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        return self._norm(path) in self._names
