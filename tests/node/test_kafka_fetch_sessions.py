"""Incremental fetch sessions (node.kafka_fetch_sessions), pure: opening, the epochs,
what an incremental answer carries, forgetting, closing and eviction."""

from __future__ import annotations

import pytest

from node.kafka_fetch_sessions import INVALID_EPOCH, SESSION_NOT_FOUND, FetchSessionError, FetchSessions

P0, P1 = ("t", 0), ("t", 1)


def carried(sessions, session, named, answers):
    """The keys an answer carries, given (key, has data, error, hw) per partition."""
    return {k for k, data, err, hw in answers if sessions.changed(session, k, named, data, err, hw, hw, 0)}


def test_no_session_and_a_full_fetch_that_opens_one():
    s = FetchSessions()
    session, wanted, named = s.resolve(0, -1, [("t", 0, 5, 100)], [])
    assert session is None and wanted == [("t", 0, 5, 100)] and named == {P0} and len(s) == 0
    session, wanted, named = s.resolve(0, 0, [("t", 0, 5, 100), ("t", 1, 7, 100)], [])
    assert session is not None and session.id != 0 and session.epoch == 1 and named == {P0, P1}
    assert carried(s, session, named, [(P0, False, False, 10), (P1, False, False, 10)]) == {P0, P1}


def test_an_incremental_fetch_names_what_changed_and_hears_what_moved():
    s = FetchSessions()
    session, _, named = s.resolve(0, 0, [("t", 0, 5, 100), ("t", 1, 7, 100)], [])
    carried(s, session, named, [(P0, False, False, 10), (P1, False, False, 10)])
    same, wanted, named = s.resolve(session.id, 1, [], [])
    assert same is session and sorted(wanted) == [("t", 0, 5, 100), ("t", 1, 7, 100)] and named == set()
    assert carried(s, session, named, [(P0, False, False, 10), (P1, False, False, 10)]) == set()  # nothing new
    assert carried(s, session, named, [(P0, True, False, 11), (P1, False, False, 10)]) == {P0}
    _, wanted, named = s.resolve(session.id, 2, [("t", 0, 11, 100)], [])  # the new offset after the records
    assert ("t", 0, 11, 100) in wanted and named == {P0}
    assert carried(s, session, named, [(P0, False, False, 11), (P1, False, True, -1)]) == {P0, P1}  # named; an error
    _, wanted, _ = s.resolve(session.id, 3, [("u", 0, 0, 50)], [P1])  # one added, one forgotten
    assert sorted(wanted) == [("t", 0, 11, 100), ("u", 0, 0, 50)]


def test_a_lost_session_and_a_wrong_epoch_are_kafkas_errors():
    s = FetchSessions()
    session, _, _ = s.resolve(0, 0, [("t", 0, 0, 1)], [])
    with pytest.raises(FetchSessionError) as exc:
        s.resolve(session.id, 2, [], [])
    assert exc.value.kafka_code == INVALID_EPOCH
    s.resolve(session.id, 1, [], [])
    with pytest.raises(FetchSessionError) as exc:
        s.resolve(session.id + 12345, 1, [], [])
    assert exc.value.kafka_code == SESSION_NOT_FOUND


def test_closing_and_reopening_and_eviction():
    s = FetchSessions(max_sessions=2)
    a, _, _ = s.resolve(0, 0, [("t", 0, 0, 1)], [])
    closed, _, _ = s.resolve(a.id, -1, [("t", 0, 0, 1)], [])  # close: a full fetch, no session
    assert closed is None and len(s) == 0
    b, _, _ = s.resolve(0, 0, [("t", 0, 0, 1)], [])
    again, _, _ = s.resolve(b.id, 0, [("t", 1, 0, 1)], [])  # close and open a new one
    assert again.id != b.id and len(s) == 1
    c, _, _ = s.resolve(0, 0, [], [])
    s.resolve(again.id, 1, [], [])  # used: `c` is now the least recently used
    s.resolve(0, 0, [], [])
    assert len(s) == 2
    with pytest.raises(FetchSessionError):
        s.resolve(c.id, 1, [], [])
    s.resolve(again.id, 2, [], [])
