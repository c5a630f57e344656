"""Due times: never before the instant asked for."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from client.conventions import MAX_DELAY_MS
from client.delay import due_ms


def test_a_due_time_rounds_up_to_the_millisecond():
    assert due_ms(1.0009, None, now_ms=1_000_999.6) == 1_002_001  # not 1_001_999 (truncated twice)
    assert due_ms(None, 1_002.0001, now_ms=1_000_000.0) == 1_002_001
    assert due_ms(None, datetime.fromtimestamp(1_002.5, UTC), now_ms=1_000_000.0) == 1_002_500
    assert due_ms(0, None) is None and due_ms(None, None) is None
    assert due_ms(None, 999.9995, now_ms=1_000_000.0) is None  # already past: sent at once


@given(
    now=st.floats(1e12, 2e12, allow_nan=False),
    delay=st.floats(0.0001, MAX_DELAY_MS / 1000, allow_nan=False),
)
def test_never_due_before_now_plus_the_delay(now: float, delay: float):
    due = due_ms(delay, None, now_ms=now)
    assert due is not None and due >= now + delay * 1000 and due - (now + delay * 1000) < 1.001
