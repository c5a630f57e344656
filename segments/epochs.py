"""LeaderEpochCache: which leader epoch (Raft term) wrote which offsets.

Kafka's LeaderEpochFileCache idea: a sorted list of (epoch, start offset), one entry
per epoch change along the log. Every batch carries its epoch in its header, but
answering "what term is offset N?" from the batches means reading them; with the
cache it is a bisect. Raft asks it for the term at an index (log matching) and a
follower's leader asks `end_offset_for` to find where their logs diverge (Kafka's
OffsetsForLeaderEpoch, KIP-101/KIP-279).

The cache itself is pure memory; `segments.log.Log` persists it as a checkpoint file,
reconciles it with the log on open and keeps it in step with append and truncation.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from .errors import InvalidEpochError


class LeaderEpochCache:
    """Sorted (epoch, start offset) entries; both strictly increase."""

    def __init__(self, entries: list[tuple[int, int]] | None = None) -> None:
        self._epochs: list[int] = []
        self._starts: list[int] = []
        for epoch, start in entries or ():
            self.assign(epoch, start)

    @classmethod
    def load(cls, entries: list[tuple[int, int]]) -> LeaderEpochCache:
        """A cache from saved entries, which must already be strictly increasing in both
        epoch and start offset (ValueError otherwise): `assign` would quietly replace
        the entries a damaged file puts out of order."""
        pairs = list(entries)
        if any(e1 <= e0 or s1 <= s0 for (e0, s0), (e1, s1) in zip(pairs, pairs[1:])):
            raise ValueError(f"saved leader epochs out of order: {pairs}")
        return cls(pairs)

    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self._epochs, self._starts))

    @property
    def last_epoch(self) -> int | None:
        return self._epochs[-1] if self._epochs else None

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that `epoch` wrote from `start_offset` on; True if that is news.

        Raises InvalidEpochError if `epoch` is below the last epoch (terms never go
        back along a log). Entries starting at or after `start_offset` are replaced:
        the log assigns at its end offset, so they cover no offsets.
        """
        if self._epochs:
            last = self._epochs[-1]
            if epoch == last:
                return False
            if epoch < last:
                raise InvalidEpochError(f"leader epoch {epoch} is below the log's last epoch {last}")
            if start_offset <= self._starts[-1]:
                # The epochs starting there hold no offsets (the log only assigns at
                # its end offset): a newer epoch replaces them.
                self.truncate_from_end(start_offset)
        self._epochs.append(epoch)
        self._starts.append(start_offset)
        return True

    def epoch_at(self, offset: int) -> int | None:
        """The epoch of the entry covering `offset` (no log bounds are checked here)."""
        i = bisect_right(self._starts, offset) - 1
        return self._epochs[i] if i >= 0 else None

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int] | None:
        """(largest epoch <= `epoch`, the offset where it ended), Kafka's rule.

        For the latest epoch the end is the log end offset. For an epoch below every
        known one it is (`epoch`, first start offset). None when `epoch` is above the
        latest one, or the cache is empty.
        """
        if not self._epochs or epoch > self._epochs[-1]:
            return None
        if epoch == self._epochs[-1]:
            return epoch, log_end_offset
        higher = bisect_right(self._epochs, epoch)
        floor = higher - 1
        return (self._epochs[floor] if floor >= 0 else epoch), self._starts[higher]

    def truncate_from_end(self, end_offset: int) -> bool:
        """Forget epochs starting at or after `end_offset` (the log was cut there)."""
        keep = bisect_left(self._starts, end_offset)
        if keep == len(self._starts):
            return False
        del self._epochs[keep:]
        del self._starts[keep:]
        return True

    def truncate_from_start(self, start_offset: int) -> bool:
        """Forget epochs wholly below `start_offset`; the epoch covering it now starts there."""
        i = bisect_right(self._starts, start_offset) - 1
        if i < 0 or (i == 0 and self._starts[0] == start_offset):
            return False
        del self._epochs[:i]
        del self._starts[:i]
        self._starts[0] = start_offset
        return True

    def clear(self) -> None:
        self._epochs.clear()
        self._starts.clear()
