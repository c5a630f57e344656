"""Compression codecs of a record batch (attributes bits 0-2).

Kafka compresses the records section of a batch as one stream: everything after the
61-byte header. NONE, GZIP (the standard library) and ZSTD (the `zstandard` package)
are supported both ways. SNAPPY and LZ4 batches are valid Kafka and a broker stores
and serves them unchanged (it never decompresses on the hot path), but decoding or
building them raises `UnsupportedCompressionError`: adding a dependency for them is a
choice for the day a client needs it. Codes 5-7 are not Kafka codecs at all and are
reported as corruption.
"""

from __future__ import annotations

import enum
import gzip
import zlib

import zstandard

from .errors import CorruptBatchError, UnsupportedCompressionError


class Compression(enum.IntEnum):
    """Kafka's compression codes (attributes & 0x07)."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


_ZSTD_COMPRESSOR = zstandard.ZstdCompressor()
_ZSTD_DECOMPRESSOR = zstandard.ZstdDecompressor()


def codec_of(code: int) -> Compression:
    """The Compression for an attributes code, or CorruptBatchError for 5-7."""
    try:
        return Compression(code)
    except ValueError:
        raise CorruptBatchError(f"unknown compression codec {code} in batch attributes") from None


def compress(codec: Compression, data: bytes | bytearray | memoryview) -> bytes:
    """Compress a records section with `codec`."""
    if codec is Compression.NONE:
        return bytes(data)
    if codec is Compression.GZIP:
        return gzip.compress(data, mtime=0)
    if codec is Compression.ZSTD:
        return _ZSTD_COMPRESSOR.compress(data)
    raise UnsupportedCompressionError(f"cannot compress with {codec.name}: codec not available")


def decompress(codec: Compression, data: bytes | bytearray | memoryview, limit: int | None = None) -> bytes:
    """Decompress a records section; damaged input raises CorruptBatchError, and so
    does output beyond `limit` bytes (a few KiB of zeros can claim gigabytes)."""
    if codec is Compression.NONE:
        return bytes(data)
    if codec is Compression.GZIP:
        try:
            d = zlib.decompressobj(wbits=31)  # the gzip container
            out = d.decompress(data, (limit + 1) if limit is not None else 0)
            if not d.eof and (limit is None or len(out) <= limit):
                raise CorruptBatchError("gzip records section is truncated")
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptBatchError(f"gzip records section does not decompress: {exc}") from None
        return _within(out, limit)
    if codec is Compression.ZSTD:
        # Frames written by streaming compressors (Kafka's Java client) may omit the
        # content size, so read as a stream rather than with one-shot decompress().
        try:
            with _ZSTD_DECOMPRESSOR.stream_reader(data, read_across_frames=True) as reader:
                return _within(reader.read() if limit is None else reader.read(limit + 1), limit)
        except zstandard.ZstdError as exc:
            raise CorruptBatchError(f"zstd records section does not decompress: {exc}") from None
    raise UnsupportedCompressionError(f"cannot decompress {codec.name}: codec not available")


def _within(out: bytes, limit: int | None) -> bytes:
    if limit is not None and len(out) > limit:
        raise CorruptBatchError(f"records section decompresses to more than {limit} bytes")
    return out
