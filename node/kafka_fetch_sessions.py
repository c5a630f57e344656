"""Kafka's incremental fetch sessions (KIP-227), pure: what a session holds and which
partitions an incremental answer must carry.

A consumer reading many partitions sends them all in every fetch, and gets them all
back, data or not: most of both is repetition. With a session the node remembers the
partitions and their fetch offsets; a later request names only what changed (a new
fetch offset, a partition added, a partition forgotten) and the answer carries only the
partitions with something to say (records, a moved high watermark, last stable offset or
log start, an error). Sessions are the node's (not a connection's, as in Kafka), at most
`MAX_SESSIONS`, the least recently used evicted first: a client whose session went gets
FETCH_SESSION_ID_NOT_FOUND and starts a full one again.

The request's session id and epoch say what it is (Kafka's rules):
id 0, epoch -1: a full fetch, no session; id 0, epoch 0: a full fetch that opens one;
id N, epoch E > 0: incremental, E must follow the last; id N, epoch -1: close it (full
fetch, no session); id N, epoch 0: close it and open a new one.
"""

from __future__ import annotations

import itertools
import random
from collections import OrderedDict
from dataclasses import dataclass, field

from client.errors import InvalidRequestError

MAX_SESSIONS = 1000  # Kafka's max.incremental.fetch.session.cache.slots
NO_SESSION, FINAL_EPOCH = 0, -1

Key = tuple[str, int]


class FetchSessionError(InvalidRequestError):
    """An incremental fetch whose session is gone (`kafka_code` 70) or whose epoch is not
    the next (71): the client opens a new session."""

    def __init__(self, kafka_code: int, message: str) -> None:
        super().__init__(message)
        self.kafka_code = kafka_code


SESSION_NOT_FOUND, INVALID_EPOCH = 70, 71


@dataclass
class Wanted:
    """One partition of a session: what the client asks for."""

    fetch_offset: int
    max_bytes: int
    # What the client was last told (an answer repeats none of it unchanged).
    high_watermark: int = -2
    last_stable_offset: int = -2
    log_start_offset: int = -2


@dataclass
class Session:
    id: int
    epoch: int = 1  # the epoch its next incremental request must carry
    partitions: dict[Key, Wanted] = field(default_factory=dict)


class FetchSessions:
    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[int, Session] = OrderedDict()
        self._ids = itertools.count(random.randrange(1, 1 << 30))

    def __len__(self) -> int:
        return len(self._sessions)

    def resolve(
        self,
        session_id: int,
        epoch: int,
        asked: list[tuple[str, int, int, int]],
        forgotten: list[Key],
    ) -> tuple[Session | None, list[tuple[str, int, int, int]], set[Key]]:
        """(the session the answer belongs to or None, every partition to fetch as
        (topic, partition, offset, max bytes), the partitions the answer must carry
        whatever happens to them). Raises FetchSessionError for a lost session or a
        wrong epoch."""
        if session_id != NO_SESSION:
            if epoch in (0, FINAL_EPOCH):
                self._sessions.pop(session_id, None)
            else:
                return self._incremental(session_id, epoch, asked, forgotten)
        if epoch != 0:
            return None, asked, {(t, p) for t, p, _, _ in asked}
        session = Session(next(self._ids))
        for t, p, offset, max_bytes in asked:
            session.partitions[(t, p)] = Wanted(offset, max_bytes)
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session, asked, {(t, p) for t, p, _, _ in asked}

    def _incremental(
        self, session_id: int, epoch: int, asked: list[tuple[str, int, int, int]], forgotten: list[Key]
    ) -> tuple[Session, list[tuple[str, int, int, int]], set[Key]]:
        session = self._sessions.get(session_id)
        if session is None:
            raise FetchSessionError(SESSION_NOT_FOUND, f"fetch session {session_id} is not known here (any more)")
        if epoch != session.epoch:
            raise FetchSessionError(
                INVALID_EPOCH, f"fetch session {session_id} is at epoch {session.epoch}, not {epoch}"
            )
        self._sessions.move_to_end(session_id)
        session.epoch += 1
        for key in forgotten:
            session.partitions.pop(key, None)
        named = set()
        for t, p, offset, max_bytes in asked:
            w = session.partitions.get((t, p))
            if w is None:
                session.partitions[(t, p)] = Wanted(offset, max_bytes)
            else:
                w.fetch_offset, w.max_bytes = offset, max_bytes
            named.add((t, p))
        everything = [(t, p, w.fetch_offset, w.max_bytes) for (t, p), w in session.partitions.items()]
        return session, everything, named

    @staticmethod
    def changed(
        session: Session | None, key: Key, named: set[Key], has_data: bool, error: bool, hw: int, lso: int, start: int
    ) -> bool:
        """Whether an answer carries this partition; records what it tells."""
        if session is None:
            return True
        w = session.partitions.get(key)
        if w is None:
            return True
        moved = (hw, lso, start) != (w.high_watermark, w.last_stable_offset, w.log_start_offset)
        w.high_watermark, w.last_stable_offset, w.log_start_offset = hw, lso, start
        return has_data or error or moved or key in named
