"""Delayed delivery: the conventions producer and broker share.

A delayed message is written to an internal delay topic, one per tier of a ladder
(`__delay_100ms` ... `__delay_24h`, each with its tier in the `delay.ms` config). Every
message in a tier waits the same time, so a tier is FIFO and its scheduler (on each
delay partition's leader) only ever looks at the head. On leaving a tier a message
whose due time is still a tier or more away goes to the largest tier that fits (a long
delay cascades down the ladder); otherwise the scheduler waits out the remainder and
writes it to its target topic. The message carries its target and due time in headers.

The ladder (default `DEFAULT_TIERS_MS`): each tier is at most ~6x the one below, so a
delay of up to 7 days takes a handful of hops, and the smallest tier (100 ms) bounds how
late a very short delay can be.
"""

from __future__ import annotations

import math
import time
from datetime import datetime

from client.conventions import MAX_DELAY_MS


def due_ms(delay: float | None, deliver_at: datetime | float | None, now_ms: float | None = None) -> int | None:
    """The due time in epoch ms, or None for an immediate send. Rounded up: a message
    is never due before the instant asked for (a due time rounded down to the
    millisecond would let it arrive up to 2 ms early)."""
    if delay is not None and deliver_at is not None:
        raise ValueError("give delay or deliver_at, not both")
    now = time.time() * 1000 if now_ms is None else now_ms
    if delay is not None:
        if not 0 <= delay <= MAX_DELAY_MS / 1000:
            raise ValueError(f"delay must be 0..{MAX_DELAY_MS // 1000} seconds, got {delay}")
        return math.ceil(now + delay * 1000) if delay > 0 else None
    if deliver_at is not None:
        at = deliver_at.timestamp() if isinstance(deliver_at, datetime) else float(deliver_at)
        due = math.ceil(at * 1000)
        if due > now + MAX_DELAY_MS:
            raise ValueError(f"deliver_at may be at most {MAX_DELAY_MS // 86_400_000} days from now")
        return due if due > now else None
    return None
