"""The names both sides of the wire agree on: internal topics, the delay ladder, and the
headers TideMQ writes into messages.

Clients write these and nodes read them (or the other way round), so they live in one
module that both import, as Kafka's broker imports its `clients` module: a rename
cannot drift apart on one side. What only one side needs stays with it.
"""

from __future__ import annotations

from collections.abc import Iterable

from client.partitioner import partition_for_key

# -- internal topics ---------------------------------------------------------------------------

OFFSETS_TOPIC = "__consumer_offsets"  # committed offsets and group membership
TXN_TOPIC = "__transaction_state"  # transactional ids, epochs and states
HALF_TOPIC = "__half_messages"  # half messages awaiting their producer's decision
RUNS_TOPIC = "__handler_runs"  # each handler run of `Consumer.run(trace=True)`, keyed by its message
RUNS_RETENTION_MS = 7 * 86_400_000

# -- delayed delivery (see client/delay.py) ------------------------------------------------------

DEFAULT_TIERS_MS = (100, 500, 1_000, 5_000, 30_000, 120_000, 600_000, 3_600_000, 21_600_000, 86_400_000)
TIER_PREFIX = "__delay_"
TIER_CONFIG = "delay.ms"
# Every tier topic names the whole ladder (ms, comma-separated): a client that reads the
# tiers while the controller is still creating them knows some are missing.
LADDER_CONFIG = "delay.ladder"
MAX_DELAY_MS = 366 * 86_400_000  # the furthest a message may be delayed (brokers refuse beyond)
H_DELAY_TARGET = "tidemq.delay.target"
H_DELAY_PARTITION = "tidemq.delay.partition"
H_DELAY_DUE = "tidemq.delay.due"
DELAY_HEADERS = (H_DELAY_TARGET, H_DELAY_PARTITION, H_DELAY_DUE)
# Kept on a delayed message when it arrives: "<sent ms>;<tier>,<tier>,..." (the relay
# appends each tier it passes), so a trace shows its way without a scan.
H_DELAY_VIA = "tidemq.delay.via"


def delay_via(headers: dict[str, bytes | None], tier: str, timestamp: int) -> bytes:
    """The H_DELAY_VIA value once a record has passed `tier` (`timestamp`: its own, the
    send time at its first tier)."""
    via = headers.get(H_DELAY_VIA)
    return via + b"," + tier.encode() if via else b"%d;%s" % (timestamp, tier.encode())


def tier_name(ms: int) -> str:
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{TIER_PREFIX}{ms // size}{unit}"
    return f"{TIER_PREFIX}{ms}ms"


def pick_tier(tiers_ms: list[int] | tuple[int, ...], remaining_ms: int) -> int:
    """The largest tier no longer than what remains (the smallest if none is)."""
    fitting = [t for t in tiers_ms if t <= remaining_ms]
    return max(fitting) if fitting else min(tiers_ms)


# -- half messages (see client/half.py) ----------------------------------------------------------

H_HALF_TARGET = "tidemq.half.target"
H_HALF_PARTITION = "tidemq.half.partition"
H_HALF_GROUP = "tidemq.half.group"
H_HALF_CHECK_AFTER = "tidemq.half.check_after_ms"
H_HALF_MAX_CHECKS = "tidemq.half.max_checks"
HALF_HEADERS = (H_HALF_TARGET, H_HALF_PARTITION, H_HALF_GROUP, H_HALF_CHECK_AFTER, H_HALF_MAX_CHECKS)
MAX_GROUP_NAME = 255  # of a producer group


def half_partition(producer_group: str, partitions: int) -> int:
    """The `__half_messages` partition (and so the coordinator) of a producer group."""
    return partition_for_key(producer_group.encode(), partitions)


# -- retries and dead letters (see client/processor.py) ------------------------------------------

H_ATTEMPT = "tidemq.attempt"
H_ORIGIN_TOPIC = "tidemq.origin.topic"
H_ORIGIN_PARTITION = "tidemq.origin.partition"
H_ORIGIN_OFFSET = "tidemq.origin.offset"
H_DLQ_ERROR = "tidemq.dlq.error"
H_DLQ_TIME = "tidemq.dlq.time"
H_INSTANCE = "tidemq.instance"  # the broadcast instance a retry or dead letter belongs to
H_REPLAYED_FROM = "tidemq.replayed.from"  # on a replayed dead letter: "<dlq topic>/<partition>/<offset>"
# A decision on one dead letter, recorded in its dead-letter partition (client/dlq.py):
H_DLQ_DECISION = "tidemq.dlq.decision"  # replayed | discarded
H_DLQ_OF = "tidemq.dlq.of"  # the offset of the dead letter it decides, in the same partition
H_DLQ_REASON = "tidemq.dlq.reason"  # why, and by whom


def dlq_decision(headers: Iterable[tuple[str, bytes | None]]) -> tuple[int, str, str] | None:
    """(offset it decides, decision, reason) of a decision record in a dead-letter
    partition; None for a dead letter. One whose offset does not parse (anyone may
    write to a dead-letter topic) decides nothing: offset -1."""
    h = dict(headers)
    decision = h.get(H_DLQ_DECISION)
    if decision is None:
        return None
    try:
        of = int(h.get(H_DLQ_OF) or b"")
    except ValueError:
        of = -1
    return of, decision.decode(errors="replace"), (h.get(H_DLQ_REASON) or b"").decode(errors="replace")


def retry_topic(group: str) -> str:
    return f"{group}.retry"


def dead_letter_topic(group: str) -> str:
    return f"{group}.dlq"


# -- handler runs (Consumer.run(trace=True); see client/trace.py) ---------------------------------

H_RUN_GROUP = "tidemq.run.group"
H_RUN_MEMBER = "tidemq.run.member"
H_RUN_START = "tidemq.run.start"  # wall ms
H_RUN_MS = "tidemq.run.ms"  # how long the handler ran
H_RUN_OUTCOME = "tidemq.run.outcome"  # ok | failed | cancelled
H_RUN_ERROR = "tidemq.run.error"


def run_key(topic: str, partition: int, offset: int) -> bytes:
    """The key of a message's handler runs in RUNS_TOPIC: all of them in one partition."""
    return f"{topic}/{partition}/{offset}".encode()
