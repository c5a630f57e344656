"""The node-level failure detector: silence makes a peer down, hearing from it brings it
back, a new incarnation says it restarted."""

from __future__ import annotations

import pytest

from raft.liveness import PeerLiveness


def test_a_silent_peer_goes_down_once_after_the_timeout():
    lv = PeerLiveness([2, 3], timeout=3)
    assert lv.tick() == [] and lv.tick() == []
    lv.heard(3)
    assert lv.tick() == [2]
    assert lv.is_down(2) and not lv.is_down(3)
    assert lv.tick() == []  # reported once
    assert lv.tick() == [3]


def test_hearing_from_a_down_peer_brings_it_back():
    lv = PeerLiveness([2], timeout=1)
    assert lv.tick() == [2]
    assert lv.heard(2) == (True, False)
    assert not lv.is_down(2)
    assert lv.heard(2) == (False, False)


def test_a_new_incarnation_is_a_restart():
    lv = PeerLiveness([2], timeout=10)
    assert lv.heard(2, incarnation=7) == (False, False)  # the first one heard: nothing to compare
    assert lv.heard(2, incarnation=7) == (False, False)
    assert lv.heard(2) == (False, False)  # a group's message says nothing of incarnations
    assert lv.heard(2, incarnation=8) == (False, True)


def test_strangers_are_ignored():
    lv = PeerLiveness([2], timeout=1)
    assert lv.heard(9, incarnation=1) == (False, False)
    assert lv.tick() == [2]


def test_the_timeout_is_at_least_a_tick():
    with pytest.raises(ValueError):
        PeerLiveness([2], timeout=0)
