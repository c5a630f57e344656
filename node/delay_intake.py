"""Delayed messages from Kafka clients: a record produced to an ordinary topic with a
`tidemq-deliver-at` (epoch ms) or `tidemq-delay-ms` header goes through the delay tier.

A Kafka producer's batch is for one partition and carries that partition's sequence
numbers, so it cannot simply be written elsewhere. Exactly once, in two steps:

1. Intake. A batch holding such a record is stored in its own partition as a
   DELAY_INTAKE control batch (`segments.build_carrier`) that takes the batch's offsets
   and sequence numbers: the producer's idempotence goes on as if it were written, the
   acknowledgement means the messages are durable, and every consumer skips it. As it
   is applied, every replica numbers its records for the relay (`IntakeState`).
2. Relay. The partition's leader copies each intake's records into the smallest delay
   tier, partition `p % n` of it, as a producer id of its own (`INTAKE_PID_BASE` + the
   partition's Raft group), with the numbers given at intake (node/relay.py), then
   writes DELAY_INTAKE_DONE. The records are rebuilt from the log alone (the target and
   due time as delay headers, the intake's time as their time), so a new leader that
   relays again writes the same records under the same numbers and the tier's
   idempotence drops what is there. From the tier on, they are delayed messages like
   any other (node/delay.py); a due time further than the smallest tier cascades.

Every record of such a batch goes this way, those without a header too (due at once,
they arrive after the smallest tier: Kafka producers batch by partition, so keep delayed
and immediate messages to one partition apart if that matters). Transactional batches
with delay headers are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec

import segments
from client.conventions import H_DELAY_DUE, H_DELAY_PARTITION, H_DELAY_TARGET, MAX_DELAY_MS

log = logging.getLogger(__name__)

DELIVER_AT, DELAY_MS = "tidemq-deliver-at", "tidemq-delay-ms"
INTAKE_HEADERS = (DELIVER_AT, DELAY_MS)
_NEEDLE = b"tidemq-de"  # both header names start so: a quick look before decoding
INTAKE_PID_BASE = 3 << 40  # + the partition's Raft group (delay schedulers: 1 << 40, halves: 1 << 41)


class DelayHeaderError(ValueError):
    """A delay header whose value is not an integer in range."""


def due_of(headers: dict[str, bytes | None], timestamp: int, entered: int) -> int | None:
    """A record's due time from its headers (None: it has none). `timestamp` is the
    record's own time (-1: none), `entered` the time it was taken."""
    try:
        if DELIVER_AT in headers:
            due = int(headers[DELIVER_AT] or b"")
        elif DELAY_MS in headers:
            delay = int(headers[DELAY_MS] or b"")
            if delay < 0:
                raise ValueError
            due = (timestamp if timestamp >= 0 else entered) + delay
        else:
            return None
    except ValueError:
        raise DelayHeaderError(f"{DELIVER_AT} (epoch ms) and {DELAY_MS} take a non-negative integer") from None
    if not 0 <= due <= entered + MAX_DELAY_MS:
        raise DelayHeaderError(f"a due time may be at most {MAX_DELAY_MS // 86_400_000} days ahead")
    return due


def delayed_records(batch: bytes, now_ms: int) -> bool:
    """Whether a producer's (validated) batch holds a record with a delay header;
    DelayHeaderError if one is malformed. Decodes only batches that may hold one."""
    header = segments.parse_header(batch)
    if header.compression == segments.Compression.NONE and _NEEDLE not in batch:
        return False
    found = False
    for rec in segments.decode_records(batch):
        if due_of(dict(rec.headers), rec.timestamp, now_ms) is not None:
            found = True
    return found


class IntakeState(msgspec.Struct):
    """On every replica: the intakes not yet relayed (offset -> the relay number of
    their first record) and the next relay number."""

    pending: dict[int, int] = {}
    next_seq: int = 0

    def taken(self, offset: int, count: int) -> None:
        self.pending[offset] = self.next_seq
        self.next_seq += count

    def done(self, offset: int) -> None:
        self.pending.pop(offset, None)


def relayed_records(carrier: bytes, topic: str, partition: int) -> list[tuple]:
    """The records an intake becomes in the tier, from the log alone: (key, value,
    headers, timestamp), the delay headers replaced by the tier's."""
    header = segments.parse_header(carrier)
    inner = segments.decode_records(carrier)[0].value or b""
    entered = header.max_timestamp
    out = []
    for rec in segments.decode_records(inner):
        headers = dict(rec.headers)
        try:
            due = due_of(headers, rec.timestamp, entered)
        except DelayHeaderError:  # refused at intake; in the log all the same: at once
            due = None
        kept = tuple(h for h in rec.headers if h[0] not in INTAKE_HEADERS)
        tier_headers = (
            (H_DELAY_TARGET, topic.encode()),
            (H_DELAY_DUE, str(max(due or entered, 0)).encode()),
            (H_DELAY_PARTITION, str(partition).encode()),
        )
        out.append((rec.key, rec.value, kept + tier_headers, entered))
    return out


#: What relays one intake: (the partition, its offset, the first relay number) -> done.
Relayer = Callable[[object, int, int], Awaitable[None]]
