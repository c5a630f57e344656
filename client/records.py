"""Record-level values: where a send landed, a message as a consumer hands it out, and
what a transaction needs to know of a consumer group."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class GroupMetadata:
    """A consumer group as a transaction sees it (Kafka's `ConsumerGroupMetadata`), from
    `Consumer.group_metadata()`: the group, and for a member of it, its id and the member
    epoch each partition was assigned at, so the group can refuse offsets from a member
    that no longer holds a partition (KIP-447)."""

    group: str
    member_id: str = ""
    assigned_epochs: Mapping[tuple[str, int], int] = field(default_factory=dict)
