"""Exactly-once relaying from an internal partition's leader to a destination partition.

The delay tier and the half-message coordinator both move records they hold into user
topics. Each writes as a producer id of its own (fixed for the source partition, epoch
0) and gives every record a sequence number decided by the source log alone (in log
order, per destination), so a new leader replaying what its predecessor may already
have written makes exactly the same writes, and the destination's idempotence answers
DUPLICATE for what is there: nothing is lost and nothing doubles.
"""

from __future__ import annotations

from client.cluster import ClusterClient
from client.errors import DuplicateSequenceError, OutOfOrderSequenceError
from client.protocol import Produce
from segments import build_batch

RELAY_TIMEOUT_MS = 10_000


async def relay(
    cluster: ClusterClient, producer_id: int, dest: tuple[str, int], items: list[tuple[int, tuple]]
) -> list[int | None]:
    """Write `items` ((sequence, (key, value, headers, timestamp)), consecutive
    sequences) to `dest`; the offset each record has there, or None where a replay found
    it written long ago (its offset is no longer known)."""
    topic, p = dest

    async def produce(first_seq: int, records: list[tuple]) -> list[int | None]:
        data = build_batch(records, producer_id=producer_id, producer_epoch=0, base_sequence=first_seq)
        try:
            resp = await cluster.leader_request(topic, p, Produce(topic, p, data, timeout_ms=RELAY_TIMEOUT_MS))
        except DuplicateSequenceError:
            return [None] * len(records)  # all written before, in batches cut otherwise
        return list(range(resp.base_offset, resp.base_offset + len(records)))

    try:
        return await produce(items[0][0], [r for _, r in items])
    except OutOfOrderSequenceError:
        # A replay whose batch straddles what the previous leader wrote: one record at a
        # time, each either already there (duplicate) or the next one.
        offsets: list[int | None] = []
        for seq, record in items:
            offsets += await produce(seq, [record])
        return offsets
