"""A data partition: a Replica whose entries are producers' record batches.

Produce validates a batch once (CRC, size, not a control batch), checks idempotence
against the producer state, and proposes the bytes unchanged; the log stamps offsets and
epoch. Fetch reads whole batches up to the high watermark, so a consumer never sees an
uncommitted (and possibly later overwritten) batch.
"""

from __future__ import annotations

from typing import Awaitable

from client.errors import CorruptBatchError, InvalidRequestError, MessageTooLargeError, OffsetOutOfRangeError
from client.protocol import ACKS_LEADER, ACKS_NONE, ProduceResponse
from node.producers import BatchRef, ProducerState
from node.replica import Replica
from raft.types import Entry, EntryKind
import segments


class Partition(Replica):
    def __init__(self, *args, topic: str, partition: int, max_batch_bytes: int, **kwargs) -> None:
        super().__init__(*args, apply=type(self)._apply_entries, **kwargs)  # subclasses (offsets) override it
        self.topic = topic
        self.partition = partition
        self.max_batch_bytes = max_batch_bytes
        self.producers = ProducerState()

    # -- producing ------------------------------------------------------------------------

    def produce(self, records: bytes, acks: int, timeout_s: float) -> Awaitable[ProduceResponse | None]:
        """Synchronous up to the proposal (so pipelined batches keep their order), then
        an awaitable for the acknowledgement."""
        self.check_writable()
        if len(records) > self.max_batch_bytes:
            raise MessageTooLargeError(
                f"batch of {len(records)} bytes exceeds the limit of {self.max_batch_bytes}; send smaller batches")
        try:
            header = segments.verify(records)
        except segments.CorruptBatchError as exc:
            raise CorruptBatchError(f"{self.name}: {exc}") from None
        if header.size != len(records):
            raise CorruptBatchError(f"{self.name}: {len(records) - header.size} bytes after the batch; send one batch per request")
        if header.is_control:
            raise InvalidRequestError("producers may not write control batches")
        count = header.last_offset_delta + 1
        if header.record_count != count:
            raise CorruptBatchError(f"{self.name}: record count {header.record_count} but offset delta says {count}")
        pid = header.producer_id
        if pid >= 0:
            dup = self.producers.check(pid, header.producer_epoch, header.base_sequence, count)
            if dup is not None:
                return self._answer_duplicate(dup, timeout_s)
        waiter = self.propose(records, count, durable_only=acks == ACKS_LEADER)
        if pid >= 0:
            first_seq = header.base_sequence
            self.producers.add_pending(pid, header.producer_epoch, BatchRef(
                first_seq, first_seq + count - 1, waiter.entry.index, waiter.entry.last))
        if acks == ACKS_NONE:
            return _nothing()
        return self._answer(waiter, timeout_s)

    async def _answer(self, waiter, timeout_s: float) -> ProduceResponse:
        entry = await self.wait(waiter, timeout_s)
        return ProduceResponse(entry.index, entry.last, self.storage.log.log_start_offset)

    async def _answer_duplicate(self, dup: BatchRef, timeout_s: float) -> ProduceResponse:
        """A retry of a batch already in the log: answer once the original is committed."""
        waiters = self._waiters.get(dup.last_offset)
        if waiters:
            await self.wait(waiters[0], timeout_s)
        return ProduceResponse(dup.base_offset, dup.last_offset, self.storage.log.log_start_offset, duplicate=True)

    def _apply_entries(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.kind != EntryKind.NORMAL:
                continue
            h = segments.parse_header(e.data)
            if h.producer_id >= 0:
                self.producers.apply(h.producer_id, h.producer_epoch, BatchRef(
                    h.base_sequence, h.base_sequence + e.last - e.index, e.index, e.last))

    def role_changed(self) -> None:
        # In-flight batches of a past leadership are resolved by the log, not by memory.
        self.producers.clear_pending()
        super().role_changed()

    # -- consuming ------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> bytes:
        log = self.storage.log
        hw = self.high_watermark
        if not log.log_start_offset <= offset <= hw:
            raise OffsetOutOfRangeError(
                f"{self.name}: offset {offset} outside [{log.log_start_offset}, {hw}]",
                log_start_offset=log.log_start_offset, high_watermark=hw)
        if offset == hw:
            return b""
        return log.read(offset, max_bytes, max_offset=hw)


async def _nothing() -> None:
    return None
