"""Values the core exchanges with its caller: entries, state, snapshots and messages.

Everything here is a msgspec Struct so the node can encode it with
``msgspec.msgpack`` (messages are a tagged union, see ``Message``) without a
hand-written codec. The core never looks inside ``Entry.data`` of a NORMAL
entry: it is an opaque record batch.

Offsets, not slots: an entry covers the offset range ``[index, last]`` (its
record batch's offsets), and its term is the batch's partition leader epoch.
A log "boundary" is the ``last`` of some entry, or the log-start boundary
``first_index - 1`` (the snapshot index). Every prev-log check in the
protocol is made at a boundary.
"""

from __future__ import annotations

import enum

import msgspec

#: Node id meaning "nobody" (no vote, no known leader). Real node ids are >= 1.
NONE = 0


class EntryKind(enum.IntEnum):
    """What an entry carries; only CONFIG entries are interpreted by the core."""

    NORMAL = 0  #: an opaque record batch from a producer
    NOOP = 1  #: the empty control batch a new leader commits to learn its commit index
    CONFIG = 2  #: a membership change; data is an encoded ``ConfState``


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One record batch in the Raft log, spanning offsets ``index..last``."""

    index: int  #: first offset of the batch
    last: int  #: last offset of the batch (index + record count - 1)
    term: int  #: the leader epoch that created it
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    @property
    def size(self) -> int:
        """Bytes counted against message and ready size limits."""
        return len(self.data)


class HardState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """State that must be durable before any message that depends on it leaves."""

    term: int = 0
    vote: int = NONE
    commit: int = -1


class ConfState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A group's membership: voters decide elections and commits, learners only copy."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()

    def encode(self) -> bytes:
        """The bytes stored in a CONFIG entry."""
        return _conf_encoder.encode(self)

    @staticmethod
    def decode(data: bytes) -> ConfState:
        """Inverse of ``encode``."""
        return _conf_decoder.decode(data)

    def members(self) -> tuple[int, ...]:
        """Voters and learners, the nodes a leader replicates to."""
        return self.voters + self.learners


_conf_encoder = msgspec.msgpack.Encoder()
_conf_decoder = msgspec.msgpack.Decoder(ConfState)


class Snapshot(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The log before ``index + 1`` condensed: for group 0 the controller state in
    ``data``; for a data partition ``data`` is empty and the snapshot only says
    "the log starts after index" (retention dropped the prefix)."""

    index: int  #: last offset covered; the log continues at index + 1
    term: int  #: term of the entry ending at index
    conf: ConfState = ConfState()
    data: bytes = b""


class ConfChangeOp(enum.IntEnum):
    """Single-server membership steps (see ``RaftNode.propose_conf_change``)."""

    ADD_LEARNER = 0
    PROMOTE = 1
    REMOVE = 2


class ConfChange(msgspec.Struct, frozen=True):
    """A requested membership step: one node added as learner, promoted or removed."""

    op: ConfChangeOp
    node: int


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class SoftState(msgspec.Struct, frozen=True):
    """Volatile state the node wants to hear about when it changes (no persistence)."""

    leader: int
    role: Role


# ---------------------------------------------------------------------------
# Messages. They carry no group id: the node wraps them with one and batches
# many groups' messages between the same two nodes into one frame. They encode
# as msgpack arrays whose first element is a small integer tag (the type), so a
# heartbeat is a handful of bytes.
# ---------------------------------------------------------------------------


class Append(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=1):
    """AppendEntries: entries follow the entry ending at (prev_index, prev_term)."""

    to: int
    frm: int
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


class AppendResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=2):
    """Reply to Append or InstallSnapshot.

    On success ``index`` is the last offset now known to match the leader. On
    reject ``index`` is the rejected prev_index and (hint_index, hint_term) is
    the follower's best guess of a matching boundary: the largest boundary at
    or below min(prev_index, its last offset) whose term is <= prev_term, so the
    leader can skip a whole term of conflicting entries per round trip.
    """

    to: int
    frm: int
    term: int
    index: int
    reject: bool = False
    hint_index: int = -1
    hint_term: int = 0


class Vote(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=3):
    """RequestVote, or a pre-vote (``pre_vote``) sent at term + 1 without changing term.

    ``transfer`` marks a campaign started by TimeoutNow: it bypasses the
    check-quorum lease, because the old leader asked for it.
    """

    to: int
    frm: int
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


class VoteResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=4):
    to: int
    frm: int
    term: int
    granted: bool
    pre_vote: bool = False


class Heartbeat(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=5):
    """Leader liveness; ``commit`` is min(follower's match, leader commit), which is
    always safe for the follower to adopt. ``quiesce``: the group is idle and every
    follower the leader hears from holds its whole log, committed; a follower whose log
    ends at ``commit``, all of it committed, goes quiet (stops its election timer) and
    says so in its response."""

    to: int
    frm: int
    term: int
    commit: int
    quiesce: bool = False


class HeartbeatResponse(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=6):
    """``lost_tail`` is the follower's last offset (-1 for an empty log) when its log
    ends before the commit the heartbeat carried (it lost an acknowledged tail), else None.
    ``quiesced`` is the commit (= its last offset) at which the follower went quiet on a
    ``Heartbeat(quiesce=True)``, else None."""

    to: int
    frm: int
    term: int
    lost_tail: int | None = None
    quiesced: int | None = None


class InstallSnapshot(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=7):
    """Sent to a follower whose next entry the leader no longer has."""

    to: int
    frm: int
    term: int
    snapshot: Snapshot


class TimeoutNow(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=8):
    """Leadership transfer: the receiver starts an election at once (no pre-vote)."""

    to: int
    frm: int
    term: int


Message = Append | AppendResponse | Vote | VoteResponse | Heartbeat | HeartbeatResponse | InstallSnapshot | TimeoutNow
