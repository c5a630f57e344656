"""Replica: what is in the log is data; an entry that fails to apply is skipped on every
replica (and again on replay) instead of stopping the node; no fsync runs on the event
loop."""

import os
import threading
import traceback

import pytest
import trio
import trio.testing

from client.cluster import ClusterClient
from client.connection import open_connection
from client.protocol import CreateTopic, DeleteTopic
from node.broker import CONTROLLER_GROUP
from node.replica import in_sync_of
from segments import build_batch
from segments.batch import HEADER_SIZE
from tests.cluster import local_cluster
from tests.raft.test_quiescence import ET, quiet_cluster
from tests.segments.helpers import recrc


def _undecodable() -> bytes:
    b = bytearray(build_batch([(None, b"not a command" * 4, (), 1)]))
    b[HEADER_SIZE] = 0x7F  # a record length that cannot be
    return recrc(b)


async def test_an_entry_that_fails_to_apply_is_skipped_everywhere_and_on_replay(tmp_path):
    async with local_cluster(tmp_path, 3) as c:
        ctrl = await c.wait_controller()
        leader = c.brokers[ctrl].replicas[CONTROLLER_GROUP]
        waiter = leader.propose(_undecodable(), 1)  # as if it had been written before any check
        await leader.wait(waiter, 10)
        with trio.fail_after(10):
            while not all(b.replicas[CONTROLLER_GROUP].apply_errors == 1 for b in c.brokers.values()):
                await trio.sleep(0.02)
        async with ClusterClient(c.bootstrap) as client:
            await client.controller_request(CreateTopic("after", 1, 3))  # the controller goes on
        other = next(n for n in c.brokers if n != ctrl)
        await c.stop(other, graceful=False)
        restarted = await c.start(other)  # replays the bad entry from its log
        with trio.fail_after(20):
            while "after" not in restarted.state.topics or restarted.replicas[CONTROLLER_GROUP].apply_errors < 1:
                await trio.sleep(0.05)


async def test_a_storage_error_takes_the_replica_offline_not_the_node(tmp_path):
    import errno

    from client.errors import NotLeaderError
    from client.protocol import Produce

    async with local_cluster(tmp_path, 3) as c:
        async with ClusterClient(c.bootstrap) as client:
            await client.controller_request(CreateTopic("disk", 1, 3))
            leader = (await c.wait_leaders("disk"))[0]
            part = c.brokers[leader].partitions[("disk", 0)]

            def full(entries):
                raise OSError(errno.ENOSPC, "No space left on device")

            part.storage.append = full
            with trio.fail_after(30):
                # The write that meets the full disk takes the leader's replica offline;
                # the producer's retries find the new leader on another node.
                await client.leader_request("disk", 0, Produce("disk", 0, build_batch([(None, b"x", (), None)])))
            assert part.offline is not None and not c.brokers[leader].shutting_down
            try:
                part.check_writable()
                raise AssertionError("an offline replica took a write")
            except NotLeaderError as exc:
                assert "storage error" in exc.message
            await client.controller_request(CreateTopic("other", 1, 3))  # the node goes on
            await c.wait_leaders("other")


async def test_no_fsync_runs_on_the_event_loop(tmp_path, monkeypatch):
    """Topic replicas opened by the controller's apply, controller snapshots, a
    snapshot installed on a node that fell behind, a restart: every fsync runs in a
    worker thread or in the kernel (node/aio.py), so a slow disk never stalls the
    node's other work."""
    on_loop = []

    def recording(call):
        def recorded(fd):
            if threading.current_thread() is threading.main_thread():
                on_loop.append("".join(traceback.format_stack(limit=9)))
            return call(fd)

        return recorded

    async with local_cluster(tmp_path, 3, controller_snapshot_every=5, fsync="always") as c:
        ctrl = await c.wait_controller()
        monkeypatch.setattr(os, "fsync", recording(os.fsync))
        monkeypatch.setattr(os, "fdatasync", recording(os.fdatasync))
        lagger = next(n for n in c.peers if n != ctrl)
        await c.stop(lagger, graceful=False)
        async with open_connection(c.peers[ctrl]) as conn:
            for i in range(8):
                await conn.request(CreateTopic(f"t{i}", partitions=1, replication=2))
            await conn.request(DeleteTopic("t0"))
        with trio.fail_after(10):
            while c.brokers[ctrl].replicas[CONTROLLER_GROUP].storage.first_index() <= 5:
                await trio.sleep(0.02)
        await c.start(lagger)
        with trio.fail_after(15):
            while (
                not set(c.brokers[lagger].state.topics) >= {f"t{i}" for i in range(1, 8)}
                or "t0" in c.brokers[lagger].state.topics
            ):
                await trio.sleep(0.05)
        assert c.brokers[lagger].replicas[CONTROLLER_GROUP].storage.first_index() > 5  # from the snapshot
        if c.brokers[ctrl].syncer.active:  # (io_uring: most log syncs need no thread)
            assert c.brokers[ctrl].syncer.syncs > 0
    assert not on_loop, on_loop[0]


def test_a_member_is_in_sync_while_it_holds_the_log_of_a_tick_ago_and_is_not_held_down():
    """A quiet leader hears nothing, so who it heard from "lately" goes stale (an
    unquiesce resets it), as it does for a trailing follower of thrifty appends between
    its batches; in sync is who holds what the leader had a tick ago and is heard from
    lately or not held down by the failure detector."""
    c = quiet_cluster()
    lead = c.elect(1)
    c.tick(5)
    assert lead.quiescent and in_sync_of(lead) == [1, 2, 3]
    lead.prs[3].recent_active = False  # as after a wake-up whose heartbeat 3 never answered
    assert in_sync_of(lead) == [1, 2, 3]
    lead.peers_down.add(3)  # (without waking it: how peer_down leaves it is not the point)
    assert in_sync_of(lead) == [1, 2]
    lead.peers_down.discard(3)
    lead.quiescent = False  # awake, 3 not heard from since: it holds the log and is up
    assert in_sync_of(lead) == [1, 2, 3]
    c.isolate(3)
    c.propose(1, b"x")
    assert in_sync_of(lead) == [1, 2, 3]  # (its acknowledgement may be on its way)
    c.tick(2)
    assert in_sync_of(lead) == [1, 2]  # it lacks what the leader had a tick ago
    c.heal()
    c.tick(ET)
    assert in_sync_of(lead) == [1, 2, 3]


@pytest.fixture
def syncer():
    """The node's DiskSync where io_uring is to be had, else None: a begun Ready then
    syncs in a worker thread, and everything but the kernel's count still holds."""
    from node.aio import DiskSync

    s = DiskSync()
    if not s.open():
        yield None
        return
    yield s
    s.close()


def _kernel_syncs(syncer) -> int | None:
    return None if syncer is None else syncer.syncs


async def _acknowledged(sent: list, i: int) -> None:
    """Until the acknowledgement of the `i`th append has been sent."""
    with trio.fail_after(5):
        while len(sent) == i:
            await trio.sleep(0.001)


def _lone_follower(tmp_path, syncer):
    """A follower replica of group 7 on real storage, its sends collected."""
    import random

    from node.replica import Replica
    from node.storage import LogStorage
    from raft import ConfState
    from raft.core import Config, RaftNode
    from segments import LogConfig

    st = LogStorage(tmp_path / "g", LogConfig(fsync="never"), ConfState((1, 2, 3)))
    core = RaftNode(Config(id=1, rng=random.Random(1)), st)
    sent: list = []
    replica = Replica(
        7,
        "g",
        st,
        core,
        lambda group, to, msg: sent.append(msg),
        apply=lambda r, entries: None,
        fsync=True,
        leader_addr=lambda n: None,
        syncer=syncer,
    )
    return replica, sent


def _append(index: int, value: bytes | None = None):
    from raft import Append, Entry, EntryKind

    entry = Entry(index, index, 1, EntryKind.NORMAL, build_batch([(None, value or b"v%d" % index, (), 0)]))
    return Append(to=1, frm=2, term=1, prev_index=index - 1, prev_term=1 if index else 0, entries=(entry,), commit=-1)


async def test_a_ready_is_begun_by_the_task_that_stepped_the_core(tmp_path, syncer):
    """Written, and its fsync handed to the kernel, before the driver's task runs; the
    acknowledgement waits for that sync; the io lock is held for the Ready until the
    driver's task finishes it; cancelled with a Ready begun, the task still waits for
    the sync and lets the lock go."""
    from raft import AppendResponse

    replica, sent = _lone_follower(tmp_path, syncer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica.run)
        for i in range(2):  # (a new log's first sync owes its directory too: a thread's)
            await trio.testing.wait_all_tasks_blocked()
            replica.step(_append(i))
            assert replica.driver.begun and replica.io_lock.value == 0
            assert replica.storage.last_index() == i and len(sent) == i
            await _acknowledged(sent, i)
            assert type(sent[i]) is AppendResponse and sent[i].index == i
            assert not replica.driver.begun and replica.io_lock.value == 1
        assert _kernel_syncs(syncer) in (None, 1)
        nursery.cancel_scope.cancel()

    # The driver's task cancelled with a Ready begun (its sync in the kernel): it waits
    # for the sync, lets the lock go and sends nothing. (As `_begin_here` would, by hand:
    # with the task running, its Ready may finish before the cancellation lands.)
    replica.core.step(_append(2))
    replica.io_lock.acquire_nowait()
    assert replica.driver.begin() and replica.driver.begun
    with trio.CancelScope() as scope:
        scope.cancel()
        await replica.run()
    assert not replica.driver.begun and replica.io_lock.value == 1 and _kernel_syncs(syncer) in (None, 2)
    assert len(sent) == 2  # the cancelled Ready's acknowledgement never left


async def test_a_large_write_waits_for_the_drivers_task_and_a_thread(tmp_path, syncer):
    """Throughput's writes keep their batching: past SMALL_WRITE_BYTES a Ready is not
    begun where it arrives, and its sync goes to a worker thread, not the kernel."""
    from node.replica import SMALL_WRITE_BYTES

    replica, sent = _lone_follower(tmp_path, syncer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replica.run)
        for i, value in enumerate((None, None, b"x" * (SMALL_WRITE_BYTES + 1))):
            await trio.testing.wait_all_tasks_blocked()
            replica.step(_append(i, value))
            assert replica.driver.begun == (i < 2)
            await _acknowledged(sent, i)
        assert _kernel_syncs(syncer) in (None, 1)  # the second; the first owed the new log's directory too
        nursery.cancel_scope.cancel()
