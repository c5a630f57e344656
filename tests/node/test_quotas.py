"""Quotas: the token buckets (a debt over the rate is the throttle time; `User:*` for
users without their own; the cluster's nodes never throttled), the settings in the
controller's state and their checks."""

from __future__ import annotations

import pytest

from client.errors import InvalidRequestError
from client.quotas import FETCH_RATE, PRODUCE_RATE, REQUEST_RATE, check_quotas
from node.metadata import ClusterState, SetQuotasCmd, decode_state, encode_state
from node.quotas import BURST_S, MAX_THROTTLE_S, Quotas


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_debt_over_the_rate_is_the_throttle_time():
    clock = Clock()
    limits = {"User:slow": {PRODUCE_RATE: 1000.0}}
    q = Quotas(lambda: limits, clock=clock)
    q.charge("User:slow", PRODUCE_RATE, 1000 * BURST_S)  # the burst: free
    assert q.throttle_s("User:slow") == 0
    q.charge("User:slow", PRODUCE_RATE, 500)
    assert q.throttle_s("User:slow") == pytest.approx(0.5)
    clock.now += 0.3
    assert q.throttle_s("User:slow") == pytest.approx(0.2)
    clock.now += 0.2
    assert q.throttle_s("User:slow") == 0
    q.charge("User:slow", PRODUCE_RATE, 10**9)
    assert q.throttle_s("User:slow") == MAX_THROTTLE_S  # one wait at most
    q.charge("User:fast", PRODUCE_RATE, 10**9)
    assert q.throttle_s("User:fast") == 0  # no quota: nothing


def test_every_user_default_own_quota_first_and_nodes_exempt():
    clock = Clock()
    limits = {"User:*": {REQUEST_RATE: 10.0, FETCH_RATE: 100.0}, "User:vip": {REQUEST_RATE: 1000.0}}
    q = Quotas(lambda: limits, clock=clock)
    for who in ("User:a", "User:vip", "Node:2"):
        for _ in range(12):
            q.charge(who, REQUEST_RATE, 1)
    assert q.throttle_s("User:a") == pytest.approx((12 - 10 * BURST_S) / 10)
    assert q.throttle_s("User:vip") == 0
    assert q.throttle_s("Node:2") == 0
    q.charge("User:vip", FETCH_RATE, 100)  # the default for what it has not set itself
    assert q.throttle_s("User:vip") == pytest.approx((100 - 100 * BURST_S) / 100)
    limits.clear()  # removed: the debt goes with the next charge
    q.charge("User:a", REQUEST_RATE, 1)
    assert q.throttle_s("User:a") == 0


def test_quotas_in_the_controller_state():
    s = ClusterState()
    s.apply(SetQuotasCmd("User:a", {PRODUCE_RATE: 1e6, FETCH_RATE: 2e6}))
    s.apply(SetQuotasCmd("User:a", {REQUEST_RATE: 50.0}, [FETCH_RATE]))
    assert s.quotas == {"User:a": {PRODUCE_RATE: 1e6, REQUEST_RATE: 50.0}}
    assert decode_state(encode_state(s)).quotas == s.quotas
    s.apply(SetQuotasCmd("User:a", {}, [PRODUCE_RATE, REQUEST_RATE]))
    assert s.quotas == {}


@pytest.mark.parametrize(
    "principal, rates, delete, why",
    [
        ("alice", {PRODUCE_RATE: 1.0}, [], "User:NAME"),
        ("User:a", {"bytes": 1.0}, [], "unknown quota"),
        ("User:a", {PRODUCE_RATE: 0.0}, [], "positive rate"),
        ("User:a", {PRODUCE_RATE: float("inf")}, [], "positive rate"),
        ("User:a", {PRODUCE_RATE: 1.0}, [PRODUCE_RATE], "both set and deleted"),
    ],
)
def test_quota_settings_are_checked(principal, rates, delete, why):
    with pytest.raises(InvalidRequestError, match=why):
        check_quotas(principal, rates, delete)
