"""Which partition a message goes to.

A key hashes with Kafka's murmur2 (`toPositive(murmur2(key)) % partitions`), so a key
lands on the same partition a Kafka client would pick: serial (ordered) messages share a
key. Messages without a key are spread a batch at a time (Kafka's sticky partitioner):
the producer sticks to one partition until that batch is sent, then moves on, so
concurrent messages fill batches instead of scattering singletons.
"""

from __future__ import annotations

import random

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c) as a signed 32-bit int, like Utils.murmur2."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length - (length & 3)
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class StickyPartitioner:
    """Keyless messages: one partition per topic until `next_batch()` is called."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._current: dict[str, int] = {}

    def partition(self, topic: str, partitions: int) -> int:
        p = self._current.get(topic)
        if p is None or p >= partitions:
            p = self._current[topic] = self._rng.randrange(partitions)
        return p

    def next_batch(self, topic: str, partitions: int) -> None:
        """The current batch of `topic` went out: move to another partition."""
        if partitions > 1:
            old = self._current.get(topic, -1)
            choice = self._rng.randrange(partitions - 1)
            self._current[topic] = choice + 1 if choice >= old >= 0 else choice
