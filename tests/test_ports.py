"""The test helpers' ports (tests/cluster.py): under pytest-xdist each worker hands out
ports from a slice of its own, below the kernel's ephemeral range."""

from __future__ import annotations

from tests import cluster


def test_workers_get_disjoint_slices_below_the_ephemeral_range(monkeypatch):
    low, _ = cluster._ephemeral_range()
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    whole = cluster.port_range()
    assert whole[1] == low
    slices = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
        slices.append(cluster.port_range())
    for (a_first, a_end), (b_first, _) in zip(slices, slices[1:]):
        assert a_first < a_end <= b_first
    assert whole[0] <= slices[0][0] and slices[-1][1] <= low


def test_a_port_is_handed_out_once(monkeypatch):
    monkeypatch.setattr(cluster, "_handed_out", set())
    ports = cluster.free_ports(20)
    first, end = cluster.port_range()
    assert len(set(ports)) == 20 and all(first <= p < end for p in ports)
    assert not cluster.claim(ports[:1]), "a port already handed out is not handed out again"
