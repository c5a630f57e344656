"""Zig-zag variable-length integers, as Kafka's records use them.

A signed value is zig-zag mapped (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...) so small
magnitudes of either sign take few bytes, then written seven bits at a time, low
bits first, the high bit of each byte saying "more follows". Kafka's `varint` is an
int32 (at most 5 bytes) and its `varlong` an int64 (at most 10 bytes); a longer
encoding is corrupt, not merely large, and is reported as such.
"""

from __future__ import annotations

from .errors import CorruptBatchError

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def append_varint(out: bytearray, value: int) -> None:
    """Append `value` (which must fit an int64) zig-zag encoded to `out`."""
    z = (value << 1) ^ (value >> 63)
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def size_of_varint(value: int) -> int:
    """How many bytes `append_varint(value)` writes."""
    z = (value << 1) ^ (value >> 63)
    n = 1
    while z > 0x7F:
        z >>= 7
        n += 1
    return n


def read_varint(buf: bytes | bytearray | memoryview, pos: int, end: int, max_bytes: int) -> tuple[int, int]:
    """Decode one zig-zag varint from `buf[pos:end]`; return (value, position after it).

    `max_bytes` is 5 for a Kafka varint (int32) and 10 for a varlong (int64).
    Raises CorruptBatchError when the encoding runs past `end` or past `max_bytes`.
    """
    z = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise CorruptBatchError(f"bad varint: record data ends inside a varint at byte {start}")
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if pos - start >= max_bytes:
            raise CorruptBatchError(f"bad varint at byte {start}: longer than {max_bytes} bytes")
    if z >> (32 if max_bytes == 5 else 64):
        kind = "an int32" if max_bytes == 5 else "an int64"
        raise CorruptBatchError(f"bad varint at byte {start}: the value does not fit {kind}")
    return (z >> 1) ^ -(z & 1), pos
