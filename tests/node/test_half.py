"""Unit checks of node/half.py that need no cluster."""

from node.half import Half, records_at
from raft.types import Entry, EntryKind
from segments import build_batch


def test_records_are_numbered_from_the_entry_not_from_unstamped_bytes():
    """A leader applies the entries it proposed before the log stamped their offsets:
    the bytes still say 0 (a chaos run found halves keyed by 0 and 1 overwriting each
    other, and the wrong message relayed)."""
    data = build_batch([(b"k1", b"a", (), 1), (b"k2", b"b", (), 2)])  # base offset 0
    entry = Entry(40, 41, 3, EntryKind.NORMAL, data)
    assert [(off, rec.value) for off, rec in records_at(entry, 0)] == [(40, b"a"), (41, b"b")]
    stamped = build_batch([(b"k1", b"a", (), 1), (b"k2", b"b", (), 2)], base_offset=40)
    assert [off for off, _ in records_at(Entry(40, 41, 3, EntryKind.NORMAL, stamped), 40)] == [40, 41]


def test_check_backs_back_off_to_a_minute():
    h = Half(5, "g", "t", None, None, b"v", [], created_ms=1_000, check_after_ms=500, max_checks=10)
    assert h.next_check_ms() == 1_500
    h.checks, h.last_check_ms = 1, 2_000
    assert h.next_check_ms() == 3_000
    h.checks = 20
    assert h.next_check_ms() == 62_000
