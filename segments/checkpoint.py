"""Small durable metadata files, written atomically (Kafka's checkpoint format).

A checkpoint is text: a version line, a count line, then one line of space-separated
integers per entry. It is written to `<name>.tmp`, fsynced, renamed over the old file
and the directory fsynced, so a crash leaves either the old or the new file, never a
mix. They are fsynced at once, except for a log whose owner syncs it itself (the
"never" policy: the node fsyncs once per Ready, in a worker thread): there the log
fsyncs them with its next flush, so no event loop waits on them.

`read_checkpoint` returns None for a missing or malformed file: every checkpoint in
this package can be rebuilt or defaulted, so the caller decides how.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from segments.fs import OS, FileSystem, write_all


def write_checkpoint(
    path: str, version: int, entries: Sequence[tuple[int, ...]], sync: bool = True, fs: FileSystem = OS
) -> None:
    """Atomically replace `path` with `entries` under `version`; without `sync` the
    caller fsyncs the file (`fsync_file`) and its directory later."""
    lines = [str(version), str(len(entries))]
    lines.extend(" ".join(str(v) for v in entry) for entry in entries)
    tmp = path + ".tmp"
    fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fs, fd, ("\n".join(lines) + "\n").encode("ascii"))
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
    """The entries of `path` (each `width` integers), or None if missing or malformed."""
    try:
        lines = fs.read_file(path).decode("ascii").splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
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
