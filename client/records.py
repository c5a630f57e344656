"""Record-level values: where a send landed, and a message as a consumer hands it out."""

from __future__ import annotations

from typing import NamedTuple


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int  # -1 for acks=0 (nobody told us)
    timestamp: int


class Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int
