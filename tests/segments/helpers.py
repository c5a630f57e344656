"""Shared builders for the segments tests."""

from __future__ import annotations

import struct

from crc32c import crc32c

from segments.batch import ATTRIBUTES_OFFSET, CRC_OFFSET, build_batch


def make_batch(n: int = 3, *, ts: int = 1_000, size: int = 10, tag: int = 0) -> bytes:
    """A batch of `n` records with distinct values, all stamped `ts` + index."""
    return build_batch([(b"k%d" % i, bytes([tag % 256]) * size + b"%d" % i, (), ts + i) for i in range(n)])


def recrc(buf: bytes | bytearray) -> bytes:
    """`buf` with its CRC recomputed (to craft batches corrupt past the CRC)."""
    out = bytearray(buf)
    struct.pack_into(">I", out, CRC_OFFSET, crc32c(memoryview(out)[ATTRIBUTES_OFFSET:]))
    return bytes(out)
