"""Small durable metadata files, written atomically (Kafka's checkpoint format).

A checkpoint is text: a version line, a count line, then one line of space-separated
integers per entry; the version line also carries a CRC-32C of the lines after it
(`0 crc32c:1a2b3c4d`). It is written to `<name>.tmp`, fsynced, renamed over the old
file and the directory fsynced, so a crash leaves either the old or the new file.
They are fsynced at once, except for a log whose owner syncs it itself (the "never"
policy: the node fsyncs once per Ready, in a worker thread): there the log fsyncs them
with its next flush, so no event loop waits on them, and a crash before that flush
may leave the new name on a torn file (a file system may make the rename durable
before the data). The checksum catches that: a torn checkpoint reads as malformed,
never as a shorter number (an epoch's start offset cut from 4821 to 482).

`read_checkpoint` returns None for a missing, torn or malformed file: every
checkpoint in this package can be rebuilt or defaulted, so the caller decides how.
Files written before the checksum (a bare version line) are still read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from crc32c import crc32c

from segments.fs import OS, FileSystem, write_all

_CRC = "crc32c:"


def write_checkpoint(
    path: str, version: int, entries: Sequence[tuple[int, ...]], sync: bool = True, fs: FileSystem = OS
) -> None:
    """Atomically replace `path` with `entries` under `version`; without `sync` the
    caller fsyncs the file (`fsync_file`) and its directory later."""
    lines = [str(len(entries))]
    lines.extend(" ".join(str(v) for v in entry) for entry in entries)
    body = ("\n".join(lines) + "\n").encode("ascii")
    tmp = path + ".tmp"
    fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fs, fd, f"{version} {_CRC}{crc32c(body):08x}\n".encode("ascii") + body)
        if sync:
            fs.fsync(fd)
    finally:
        fs.close(fd)
    fs.replace(tmp, path)
    if sync:
        fs.fsync_directory(os.path.dirname(path) or ".")


def fsync_file(path: str, fs: FileSystem = OS) -> None:
    try:
        fd = fs.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fs.fsync(fd)
    finally:
        fs.close(fd)


def read_checkpoint(path: str, version: int, width: int, fs: FileSystem = OS) -> list[tuple[int, ...]] | None:
    """The entries of `path` (each `width` integers), or None if missing, torn or malformed."""
    try:
        raw = fs.read_file(path)
    except FileNotFoundError:
        return None
    return parse_checkpoint(raw, version, width)


def parse_checkpoint(raw: bytes, version: int, width: int) -> list[tuple[int, ...]] | None:
    """`read_checkpoint` of a file's bytes."""
    first, _, body = raw.partition(b"\n")
    head = first.split(b" ")
    if len(head) == 2:
        if head[1] != f"{_CRC}{crc32c(body):08x}".encode("ascii"):
            return None  # torn, or damaged
    elif len(head) != 1:
        return None
    try:
        lines = [head[0].decode("ascii"), *body.decode("ascii").splitlines()]
    except UnicodeDecodeError:
        return None
    try:
        if len(lines) < 2 or int(lines[0]) != version or int(lines[1]) != len(lines) - 2:
            return None
        entries = [tuple(int(v) for v in line.split()) for line in lines[2:]]
    except ValueError:
        return None
    if any(len(entry) != width for entry in entries):
        return None
    return entries


def fsync_directory(path: str, fs: FileSystem = OS) -> None:
    """Make file creations, renames and deletions in `path` durable."""
    fs.fsync_directory(path)
