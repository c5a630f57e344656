"""What a peer may say: forged senders, non-members and out-of-range values are dropped."""

import pytest

from node.peerguard import MAX_TERM, refusal
from raft import Entry, EntryKind
from raft.types import (
    Append,
    AppendResponse,
    ConfState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Snapshot,
    Vote,
)

MEMBERS = (1, 2, 3)


def E(index, last, term):
    return Entry(index, last, term, EntryKind.NORMAL, b"x")


def test_a_well_formed_message_passes():
    msg = Append(to=1, frm=2, term=5, prev_index=9, prev_term=4, entries=(E(10, 12, 5), E(13, 13, 5)), commit=9)
    assert refusal(2, 1, MEMBERS, msg) is None


@pytest.mark.parametrize(
    "frm,msg,why",
    [
        (3, Heartbeat(to=1, frm=2, term=1, commit=0), "claims to come from node 2"),
        (2, Heartbeat(to=3, frm=2, term=1, commit=0), "addressed to node 3"),
        (4, Heartbeat(to=1, frm=4, term=1, commit=0), "not a member"),
        (2, Heartbeat(to=1, frm=2, term=MAX_TERM + 1, commit=0), "outside"),
        (2, Heartbeat(to=1, frm=2, term=-1, commit=0), "outside"),
        (2, Heartbeat(to=1, frm=2, term=1, commit=-5), "commit out of range"),
        (2, Vote(to=1, frm=2, term=3, last_index=1 << 63, last_term=1), "out of range"),
        (2, AppendResponse(to=1, frm=2, term=3, index=-7), "out of range"),
        (2, HeartbeatResponse(to=1, frm=2, term=3, quiesced=-9), "out of range"),
        (2, HeartbeatResponse(to=1, frm=2, term=3, lost_tail=1 << 63), "out of range"),
        (
            2,
            Append(to=1, frm=2, term=5, prev_index=9, prev_term=4, entries=(E(11, 12, 5),), commit=9),
            "malformed entry",
        ),
        (
            2,
            Append(to=1, frm=2, term=5, prev_index=9, prev_term=4, entries=(E(10, 12, 6),), commit=9),
            "malformed entry",
        ),
        (
            2,
            Append(to=1, frm=2, term=5, prev_index=9, prev_term=4, entries=(E(10, 8, 5),), commit=9),
            "malformed entry",
        ),
        (2, InstallSnapshot(to=1, frm=2, term=5, snapshot=Snapshot(10, 9, ConfState((1, 2, 3)))), "snapshot"),
    ],
)
def test_refused(frm, msg, why):
    assert why in (refusal(frm, 1, MEMBERS, msg) or "")
