"""The trace derivation on hand-built histories: each status a group can give a
message (not yet delivered, done, retrying, done on a retry, dead letter, replayed),
the steps in time order, and the transaction's outcome."""

from __future__ import annotations

from client.conventions import (
    H_ATTEMPT,
    H_DELAY_VIA,
    H_DLQ_ERROR,
    H_DLQ_TIME,
    H_ORIGIN_OFFSET,
    H_ORIGIN_PARTITION,
    H_ORIGIN_TOPIC,
    H_REPLAYED_FROM,
)
from client.trace import GroupView, Stored, derive, fate, is_origin

MSG = Stored("jobs", 0, 7, 1_000, b"k", b"v", [("user", b"1")], 42, False)


def origin(attempt: int) -> list[tuple[str, bytes | None]]:
    return [
        (H_ORIGIN_TOPIC, b"jobs"),
        (H_ORIGIN_PARTITION, b"0"),
        (H_ORIGIN_OFFSET, b"7"),
        (H_ATTEMPT, b"%d" % attempt),
    ]


def retry(offset: int, attempt: int, at: int) -> Stored:
    return Stored("g.retry", 1, offset, at, b"k", b"v", origin(attempt), 9, False)


def dead(offset: int, at: int) -> Stored:
    headers = [*origin(3), (H_DLQ_ERROR, b"RuntimeError: no"), (H_DLQ_TIME, b"%d" % at)]
    return Stored("g.dlq", 2, offset, at, b"k", b"v", headers, 9, False)


def test_a_group_that_has_not_reached_it_and_one_that_committed_past_it():
    assert fate("g", 7, GroupView(None)).status == "not yet delivered"
    assert fate("g", 7, GroupView(7)).detail == "the group is at offset 7"
    assert fate("g", 7, GroupView(8)).status == "done"


def test_retries_in_flight_and_handled():
    view = GroupView(8, [retry(3, 1, 2_000), retry(5, 2, 3_000)], positions={("g.retry", 1): 5})
    assert fate("g", 7, view) == ("g", "retrying", "attempt 3 due at 3000 ms")
    done = view._replace(positions={("g.retry", 1): 6})
    assert fate("g", 7, done) == ("g", "done", "handled on attempt 3")


def test_a_dead_letter_and_its_replay():
    view = GroupView(8, [retry(3, 1, 2_000)], [dead(4, 5_000)], {("g.retry", 1): 4})
    assert fate("g", 7, view) == ("g", "dead letter", "after 3 attempt(s): RuntimeError: no")
    # The replay group got past it, but the copy is not found (older than the header):
    assert fate("g", 7, view._replace(positions={("g.dlq", 2): 5})).detail == "sent back to jobs by a replay"
    copy = Stored("jobs", 0, 12, 6_000, b"k", b"v", [("user", b"1"), (H_REPLAYED_FROM, b"g.dlq/2/4")], 50, False)
    replayed = view._replace(replays=[copy])
    assert fate("g", 7, replayed) == ("g", "replayed", "sent back to jobs-0 at offset 12")

    t = derive(MSG, "", {"g": replayed, "other": GroupView(9)})
    assert [s.what for s in t.steps] == ["produced", "retry", "dead letter", "replayed"]
    assert [s.time_ms for s in t.steps] == [1_000, 2_000, 5_000, 6_000]
    assert [(g.group, g.status) for g in t.groups] == [("g", "replayed"), ("other", "done")]


def test_the_transaction_and_the_producer_in_the_first_step():
    t = derive(MSG._replace(transactional=True), "aborted", {})
    assert t.steps[0].detail == "by producer 42, in a transaction (aborted)" and t.outcome == "aborted"
    assert derive(MSG._replace(producer_id=-1), "", {}).steps[0].detail == "by a producer without id"


def test_only_records_of_this_origin_count():
    assert is_origin(retry(1, 1, 0), "jobs", 0, 7)
    assert not is_origin(retry(1, 1, 0), "jobs", 0, 8) and not is_origin(MSG, "jobs", 0, 7)


def test_a_dead_letter_discarded_by_hand():
    view = GroupView(8, [], [dead(4, 5_000)], decisions={(2, 4): ("discarded", "bad data (by User:ops)", 7_000)})
    assert fate("g", 7, view) == ("g", "discarded", "by hand from g.dlq-2@4: bad data (by User:ops)")
    t = derive(MSG, "", {"g": view})
    assert [(s.what, s.time_ms) for s in t.steps][-1] == ("discarded", 7_000)


def test_handler_runs_are_steps_and_make_a_message_delivered():
    from client.conventions import H_RUN_ERROR, H_RUN_GROUP, H_RUN_MEMBER, H_RUN_MS, H_RUN_OUTCOME, H_RUN_START

    def ran(start: int, outcome: str, error: str = "") -> Stored:
        headers = [
            (H_RUN_GROUP, b"g"),
            (H_RUN_MEMBER, b"m-1"),
            (H_RUN_START, b"%d" % start),
            (H_RUN_MS, b"12"),
            (H_RUN_OUTCOME, outcome.encode()),
            (H_RUN_ERROR, error.encode()),
        ]
        return Stored("__handler_runs", 0, start, start, b"jobs/0/7", None, headers, 3, False)

    view = GroupView(7, runs=[ran(2_000, "failed", "ValueError: no"), ran(3_000, "ok")])
    assert fate("g", 7, view) == ("g", "delivered", "handled 2 time(s), the last ok; not committed yet")
    t = derive(MSG, "", {"g": view})
    assert t.outcome == ""  # (the message's transaction, not a run's)
    assert [(s.what, s.detail) for s in t.steps[1:]] == [
        ("handled", "g: m-1, 12 ms, failed: ValueError: no"),
        ("handled", "g: m-1, 12 ms, ok"),
    ]
    assert fate("g", 7, view._replace(committed=8)).status == "done"


def test_a_delayed_message_shows_when_it_was_sent_and_its_tiers():
    via = (H_DELAY_VIA, b"1000;__delay_5s,__delay_1s,__delay_100ms")
    delayed = MSG._replace(timestamp=7_200, headers=[("user", b"1"), via])
    t = derive(delayed, "", {})
    assert [(s.time_ms, s.what) for s in t.steps] == [(1_000, "produced"), (7_200, "delayed")]
    assert t.steps[0].detail == "with a delay, into __delay_5s"
    assert t.steps[1].detail == "due, through __delay_5s, __delay_1s, __delay_100ms; written by producer 42"
