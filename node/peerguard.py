"""What a peer may say: Raft messages checked before any core sees them.

An authenticated node is trusted to be a node of this cluster, not to be bug-free, and
a stale or confused one must not be able to push a replica into a state it persists:
a term that does not fit a record batch's 32-bit partition leader epoch, a message
signed with another node's id, a group it is not a member of. Such a message is
dropped with a warning and a metric; Raft treats it as lost.
"""

from __future__ import annotations

from raft.types import Append, AppendResponse, Heartbeat, HeartbeatResponse, InstallSnapshot, Message, Vote

MAX_TERM = (1 << 31) - 1  # stored as the batch's partition leader epoch (int32)
MAX_OFFSET = (1 << 63) - 1


def _offset_ok(x: int) -> bool:
    return -1 <= x <= MAX_OFFSET


def _term_ok(t: int) -> bool:
    return 0 <= t <= MAX_TERM


def refusal(
    frm: int, me: int, members: frozenset[int] | tuple[int, ...], msg: Message, *, learning: bool = False
) -> str | None:
    """Why `msg`, received from authenticated node `frm`, must be dropped (None: fine).
    `learning`: this replica does not vote (a learner, or one a move just opened, whose
    configuration may predate the leader's): it takes a leader's messages from any node
    of the cluster, since what it is sent cannot count towards any commit."""
    if msg.frm != frm:
        return f"claims to come from node {msg.frm}"
    if msg.to != me:
        return f"is addressed to node {msg.to}"
    if frm not in members and not (learning and isinstance(msg, (Append, Heartbeat, InstallSnapshot))):
        return "comes from a node that is not a member of the group"
    if not _term_ok(msg.term):
        return f"carries term {msg.term}, outside 0..{MAX_TERM}"
    if isinstance(msg, Append):
        if not (_offset_ok(msg.prev_index) and _offset_ok(msg.commit) and _term_ok(msg.prev_term)):
            return "carries an offset or term out of range"
        at = msg.prev_index + 1
        for e in msg.entries:
            if e.index != at or e.last < e.index or not _offset_ok(e.last) or not _term_ok(e.term) or e.term > msg.term:
                return f"carries a malformed entry {e.index}-{e.last} term {e.term}"
            at = e.last + 1
    elif isinstance(msg, AppendResponse):
        if not (_offset_ok(msg.index) and _offset_ok(msg.hint_index) and _term_ok(msg.hint_term)):
            return "carries an offset or term out of range"
    elif isinstance(msg, Vote):
        if not (_offset_ok(msg.last_index) and _term_ok(msg.last_term)):
            return "carries an offset or term out of range"
    elif isinstance(msg, Heartbeat):
        if not _offset_ok(msg.commit):
            return "carries a commit out of range"
    elif isinstance(msg, HeartbeatResponse):
        if not all(x is None or _offset_ok(x) for x in (msg.lost_tail, msg.quiesced)):
            return "carries an offset out of range"
    elif isinstance(msg, InstallSnapshot):
        s = msg.snapshot
        if not (_offset_ok(s.index) and _term_ok(s.term)) or s.term > msg.term:
            return "carries a snapshot out of range"
    return None
