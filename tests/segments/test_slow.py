"""1 GB-scale append/read (run with `scripts/test -m slow tests/segments`)."""

from __future__ import annotations

import random
import struct

import pytest
from crc32c import crc32c

from segments.batch import ATTRIBUTES_OFFSET, CRC_OFFSET, build_batch, iter_batches
from segments.config import LogConfig
from segments.log import Log

GB = 1 << 30


@pytest.mark.slow
def test_one_gigabyte_append_read_reopen(tmp_path):
    template = build_batch([(b"key-%d" % i, bytes(1024), (), 1_000 + i) for i in range(100)])
    config = LogConfig(
        fsync="never", segment_bytes=128 << 20, max_batch_bytes=1 << 20, segment_ms=None, retention_ms=None
    )
    log = Log.open(str(tmp_path), config)
    count = GB // len(template)
    for n in range(count):
        batch = bytearray(template)
        batch[-9:-1] = n.to_bytes(8, "big")  # every batch distinct: its number in the last value
        struct.pack_into(">q", batch, 27, 1_000 + n)  # base timestamp
        struct.pack_into(">q", batch, 35, 1_000 + n + 99)  # max timestamp
        struct.pack_into(">I", batch, CRC_OFFSET, crc32c(memoryview(batch)[ATTRIBUTES_OFFSET:]))
        assert log.append(batch, 1 + n // 1000) == (100 * n, 100 * n + 99)
    assert log.size_bytes == count * len(template)
    per_segment = (128 << 20) // len(template)  # whole batches only
    assert log.segment_count == -(-count // per_segment)

    def check_sequential(target):
        offset, seen = 0, 0
        while offset < target.next_offset:
            data = target.read(offset, 1 << 20)
            for header, view in iter_batches(data):
                assert header.base_offset == 100 * seen
                assert bytes(view[-9:-1]) == seen.to_bytes(8, "big")
                seen += 1
            offset = header.next_offset
        assert seen == count

    check_sequential(log)
    log.close()

    reopened = Log.open(str(tmp_path), config)
    assert reopened.next_offset == 100 * count
    check_sequential(reopened)
    rng = random.Random(7)
    for _ in range(2000):
        offset = rng.randrange(reopened.next_offset)
        header = next(iter_batches(reopened.read(offset, 1)))[0]
        assert header.base_offset == offset - offset % 100
        assert reopened.term_at(offset) == 1 + (offset // 100) // 1000
    assert reopened.offset_for_timestamp(1_000 + 5000 + 99) == 500_000
    reopened.truncate_after(100 * (count // 2) - 1)
    assert reopened.next_offset == 100 * (count // 2)
    reopened.close()
