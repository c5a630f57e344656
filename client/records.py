"""Where a message landed: the value a send (or a committed half message) returns."""

from __future__ import annotations

from typing import NamedTuple


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int  # -1 for acks=0 (nobody told us)
    timestamp: int
