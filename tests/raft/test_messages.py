"""Messages and entries travel as msgspec msgpack; the node decodes the union."""

from __future__ import annotations

import msgspec
import pytest

from raft import (
    Append,
    AppendResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    Snapshot,
    TimeoutNow,
    Vote,
    VoteResponse,
)

ENC = msgspec.msgpack.Encoder()
DEC = msgspec.msgpack.Decoder(Message)

EXAMPLES = [
    Append(
        to=2,
        frm=1,
        term=3,
        prev_index=9,
        prev_term=2,
        entries=(Entry(10, 14, 3, EntryKind.NORMAL, b"\n\x00batch"),),
        commit=9,
    ),
    AppendResponse(to=1, frm=2, term=3, index=9, reject=True, hint_index=4, hint_term=1),
    Vote(to=2, frm=1, term=4, last_index=14, last_term=3, pre_vote=True),
    VoteResponse(to=1, frm=2, term=4, granted=True, pre_vote=True),
    Heartbeat(to=2, frm=1, term=3, commit=14),
    Heartbeat(to=2, frm=1, term=3, commit=14, quiesce=True),
    HeartbeatResponse(to=1, frm=2, term=3),
    HeartbeatResponse(to=1, frm=2, term=3, quiesced=14),
    InstallSnapshot(to=3, frm=1, term=3, snapshot=Snapshot(9, 2, ConfState((1, 2, 3), (4,)), b"state")),
    TimeoutNow(to=2, frm=1, term=3),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_the_union(msg):
    assert DEC.decode(ENC.encode(msg)) == msg


def test_heartbeats_are_small_enough_to_coalesce_per_peer():
    # A group that is not quiet sends one tiny heartbeat per follower per heartbeat
    # interval; the node batches all groups' messages to a peer into one frame.
    assert len(ENC.encode(Heartbeat(to=7, frm=3, term=1200, commit=10_000_000))) <= 20
    assert len(ENC.encode(HeartbeatResponse(to=7, frm=3, term=1200))) <= 12


class _OldHeartbeat(msgspec.Struct, frozen=True, array_like=True, tag=5):
    to: int
    frm: int
    term: int
    commit: int


class _OldHeartbeatResponse(msgspec.Struct, frozen=True, array_like=True, tag=6):
    to: int
    frm: int
    term: int
    lost_tail: int | None = None


def test_quiescence_fields_are_read_by_and_from_nodes_without_them():
    # Appended with defaults: a node from before quiescence reads a quiescing heartbeat
    # as a plain one (and so never acknowledges it: its leader stays awake), and its
    # answers read as "not quiet".
    old_hb = msgspec.msgpack.Decoder(_OldHeartbeat | _OldHeartbeatResponse)
    assert old_hb.decode(ENC.encode(Heartbeat(to=2, frm=1, term=3, commit=14, quiesce=True))) == _OldHeartbeat(
        2, 1, 3, 14
    )
    assert DEC.decode(ENC.encode(_OldHeartbeatResponse(1, 2, 3))) == HeartbeatResponse(to=1, frm=2, term=3)
    assert DEC.decode(ENC.encode(_OldHeartbeat(2, 1, 3, 14))) == Heartbeat(to=2, frm=1, term=3, commit=14)


def test_conf_state_encoding_is_stable():
    conf = ConfState((1, 2, 3), (4,))
    assert ConfState.decode(conf.encode()) == conf
