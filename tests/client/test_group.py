"""GroupMember against real brokers: hand-overs without overlap, fencing and rejoin,
leaving, losing the coordinator, errors; under trio and asyncio.

The backend-parametrized tests run the brokers in a trio run on a background thread and
the client in `anyio.run(..., backend=...)` on the test's thread, so both event loops
meet only on loopback sockets, as a real application would.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import anyio
import pytest
import trio

from client.cluster import ClusterClient
from client.errors import InvalidConfigError, InvalidRequestError, UnknownMemberError
from client.group import GroupMember, commit_offsets, describe_group, fetch_offsets, list_groups
from client.protocol import CreateTopic, FindCoordinator, GroupHeartbeat
from node.coordinator import OFFSETS_TOPIC
from tests.cluster import local_cluster

BACKENDS = ["trio", "asyncio"]
EVERYTHING = {("t", p) for p in range(4)}


@contextmanager
def cluster_thread(tmp_path, n=1):
    """An in-process cluster with topic t (4 partitions) in a trio run on another thread."""
    ready = threading.Event()
    box: dict = {}

    async def main():
        async with local_cluster(tmp_path, n, offsets_partitions=2) as c:
            await create_topic(c)
            box["cluster"], box["stop"], box["token"] = c, trio.Event(), trio.lowlevel.current_trio_token()
            ready.set()
            await box["stop"].wait()

    def run():
        try:
            trio.run(main)
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(60)
    if "error" in box or "cluster" not in box:
        raise RuntimeError("the cluster thread did not start") from box.get("error")
    try:
        yield box["cluster"]
    finally:
        trio.from_thread.run_sync(box["stop"].set, trio_token=box["token"])
        thread.join(30)
    if "error" in box:
        raise box["error"]


async def create_topic(c):
    await c.wait_leaders(OFFSETS_TOPIC)
    async with ClusterClient(c.bootstrap) as client:
        with trio.fail_after(10):
            await client.controller_request(CreateTopic("t", 4, 1))
    await c.wait_leaders("t")


class Ledger:
    """Who holds what, as the callbacks say; a partition handed to a member while another
    still holds it fails the test (the callback raises, the member re-raises)."""

    def __init__(self) -> None:
        self.holder: dict = {}
        self.events: list = []

    def callbacks(self, name: str) -> dict:
        async def on_assigned(tps):
            for tp in tps:
                assert tp not in self.holder, f"{tp} given to {name} while {self.holder[tp]} holds it"
                self.holder[tp] = name
            self.events.append((name, "+", frozenset(tps)))

        async def on_revoked(tps):
            for tp in tps:
                assert self.holder.pop(tp) == name
            self.events.append((name, "-", frozenset(tps)))

        return {"on_assigned": on_assigned, "on_revoked": on_revoked}

    def of(self, name: str) -> set:
        return {tp for tp, who in self.holder.items() if who == name}


async def until(predicate, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


@pytest.mark.parametrize("backend", BACKENDS)
def test_members_hand_partitions_over_without_overlap(tmp_path, backend):
    with cluster_thread(tmp_path) as c:

        async def body():
            ledger = Ledger()
            async with ClusterClient(c.bootstrap) as client:
                async with GroupMember(client, "g", ["t"], session_timeout=5, **ledger.callbacks("a")) as a:
                    await until(lambda: ledger.of("a") == EVERYTHING)
                    assert a.assignment == EVERYTHING
                    await a.commit({tp: 10 + tp[1] for tp in EVERYTHING})
                    async with GroupMember(client, "g", ["t"], session_timeout=5, **ledger.callbacks("b")) as b:
                        await until(lambda: len(ledger.of("b")) == 2 and len(ledger.of("a")) == 2)
                        assert b.assignment == ledger.of("b") and a.assignment == ledger.of("a")
                        # Only a's two surplus partitions moved: a was revoked once, b assigned once.
                        assert [e for e in ledger.events if e[0] == "a"][1:] == [("a", "-", frozenset(b.assignment))]
                        assert [e for e in ledger.events if e[0] == "b"] == [("b", "+", frozenset(b.assignment))]
                        assert await b.committed(sorted(b.assignment)) == {tp: 10 + tp[1] for tp in b.assignment}
                        desc = await describe_group(client, "g")
                        assert {m.member_id for m in desc.members} == {a.member_id, b.member_id}
                        assert "g" in await list_groups(client)
                        b_parts = frozenset(b.assignment)
                    # b left cleanly: it revoked (the ledger checks it let go before a
                    # got them), and a gets everything back.
                    assert ("b", "-", b_parts) in ledger.events
                    await until(lambda: ledger.of("a") == EVERYTHING)
                assert ledger.holder == {}, "a clean exit revokes everything"
                assert await fetch_offsets(client, "g", [("t", 0), ("t", 9)]) == {("t", 0): 10, ("t", 9): None}

        anyio.run(body, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fenced_member_revokes_everything_and_rejoins(tmp_path, backend):
    with cluster_thread(tmp_path) as c:

        async def body():
            ledger = Ledger()
            async with ClusterClient(c.bootstrap) as client:
                async with GroupMember(client, "g", ["t"], session_timeout=3, **ledger.callbacks("a")) as a:
                    await until(lambda: ledger.of("a") == EVERYTHING)
                    # Someone removes a from the group (as an expiry would): a's next
                    # heartbeat gets UNKNOWN_MEMBER; it revokes all, then rejoins.
                    first = a.member_id
                    with anyio.fail_after(10):
                        await client.coordinator_request("g", GroupHeartbeat("g", first, -1))
                    await until(lambda: len(ledger.events) >= 3)
                    assert ledger.events[1] == ("a", "-", frozenset(EVERYTHING))
                    assert ledger.events[2] == ("a", "+", frozenset(EVERYTHING))
                    # It came back under a new id: a handler of the first incarnation that
                    # commits late is refused, the new member's commits are accepted.
                    assert a.member_id != first
                    with pytest.raises(UnknownMemberError):
                        await commit_offsets(client, "g", {("t", 0): 3}, member_id=first)
                    await a.commit({("t", 0): 5})
                    assert await a.committed([("t", 0)]) == {("t", 0): 5}

        anyio.run(body, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_end_the_block_unwrapped(tmp_path, backend):
    with cluster_thread(tmp_path) as c:

        async def body():
            async with ClusterClient(c.bootstrap) as client:

                async def broken(tps):
                    raise ValueError("the consumer failed")

                with pytest.raises(ValueError, match="consumer failed"):
                    async with GroupMember(client, "g", ["t"], on_assigned=broken):
                        await anyio.sleep(10)
                with pytest.raises(InvalidRequestError):
                    async with GroupMember(client, "x" * 300, ["t"]):
                        await anyio.sleep(10)
                # The broken member left on its way out: a newcomer gets everything at once.
                ledger = Ledger()
                async with GroupMember(client, "g", ["t"], **ledger.callbacks("n")):
                    await until(lambda: ledger.of("n") == EVERYTHING, timeout=3)

        anyio.run(body, backend=backend)
    with pytest.raises(InvalidConfigError):
        GroupMember(None, "g", "t")  # type: ignore[arg-type]


async def test_a_cancelled_member_leaves_at_once(tmp_path):
    async with local_cluster(tmp_path, 1, offsets_partitions=2) as c, ClusterClient(c.bootstrap) as client:
        await create_topic(c)
        ledger = Ledger()
        with trio.CancelScope() as scope:
            async with GroupMember(client, "g", ["t"], session_timeout=30, **ledger.callbacks("a")):
                await until(lambda: ledger.of("a") == EVERYTHING)
                scope.cancel()
        # A cancelled block does not run on_revoked (the consumer is going away), but it
        # leaves: the next member does not wait for a's 30 s session timeout.
        ledger.holder.clear()
        async with GroupMember(client, "g", ["t"], **ledger.callbacks("b")):
            await until(lambda: ledger.of("b") == EVERYTHING, timeout=3)


async def test_coordinator_failover_moves_nothing(tmp_path):
    """The member list is in the log: a new coordinator knows both members, they keep
    their partitions, and commits go on."""
    async with local_cluster(tmp_path, 3, offsets_partitions=2) as c, ClusterClient(c.bootstrap) as client:
        await create_topic(c)
        ledger = Ledger()
        async with (
            GroupMember(client, "g", ["t"], session_timeout=4, **ledger.callbacks("a")) as a,
            GroupMember(client, "g", ["t"], session_timeout=4, **ledger.callbacks("b")) as b,
        ):
            await until(lambda: len(ledger.of("a")) == len(ledger.of("b")) == 2)
            events = len(ledger.events)
            coordinator = (await client.request_any(FindCoordinator("g"))).node_id
            await c.stop(coordinator, graceful=False)
            await commit_offsets(client, "g", {tp: 7 for tp in a.assignment}, member_id=a.member_id)
            with trio.fail_after(10):
                while (await describe_group(client, "g")).state != "stable":
                    await trio.sleep(0.05)
            assert ledger.events[events:] == [], "nobody revoked or was assigned anything"
            assert await a.committed(sorted(a.assignment)) == {tp: 7 for tp in a.assignment}
            assert b.assignment == ledger.of("b")


async def test_a_member_out_of_touch_gives_up_its_partitions_in_time(tmp_path):
    async with local_cluster(tmp_path, 1, offsets_partitions=1) as c, ClusterClient(c.bootstrap) as client:
        await create_topic(c)
        ledger = Ledger()
        async with GroupMember(client, "g", ["t"], session_timeout=6.0, **ledger.callbacks("a")):
            await until(lambda: ledger.of("a") == EVERYTHING)
            await c.stop(1, graceful=False)
            stopped = trio.current_time()
            await until(lambda: not ledger.holder, timeout=10)
            # at 2/3 of it after the last answer: 2 s to spare, whatever the load
            assert trio.current_time() - stopped < 6.0, "given up before the coordinator's session timeout"
            await c.start(1)
            await until(lambda: ledger.of("a") == EVERYTHING, timeout=15)
