"""The shared Ready driver: the order of its steps, whatever the storage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from raft import ConfState, Entry, HardState, Message, Snapshot
from raft.core import Ready
from raft.driver import MemoryWriter, ReadyDriver, run_now, run_sync

from .harness import make_node


class Recording(MemoryWriter):
    """A memory storage that logs every call into a shared journal."""

    def __init__(self, storage: Any, journal: list[str]) -> None:
        super().__init__(storage)
        self.journal = journal
        self.dirty = False

    @property
    def state_dirty(self) -> bool:
        return self.dirty

    def append(self, entries: Sequence[Entry]) -> None:
        self.journal.append("append")
        super().append(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self.journal.append("hard_state")
        self.dirty = self.dirty or (hs.term, hs.vote) != (self.memory.hard_state.term, self.memory.hard_state.vote)
        super().set_hard_state(hs)

    def sync(self, log: bool = True) -> None:
        self.journal.append("sync" if log else "sync_state")
        self.dirty = False


class Host:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.sent: list[Message] = []

    def restored(self, snap: Snapshot) -> None:
        self.journal.append("restored")

    def persisted(self, rd: Ready) -> None:
        self.journal.append("persisted")

    def send(self, msg: Message) -> None:
        self.journal.append("send")
        self.sent.append(msg)

    def apply(self, rd: Ready) -> None:
        self.journal.append("apply")

    def advanced(self, rd: Ready) -> None:
        self.journal.append("advanced")


def _driver(fsync: bool = True):
    node, st = make_node(1, voters=(1, 2, 3), pre_vote=False)
    journal: list[str] = []
    host = Host(journal)
    return node, ReadyDriver(node, Recording(st, journal), host, run_now, fsync=fsync), journal, host


def test_a_vote_is_durable_before_the_request_leaves():
    node, driver, journal, host = _driver()
    node.campaign()
    run_sync(driver.handle_ready())
    assert host.sent, "the campaign sent no vote requests"
    # no entries: the term and self-vote are synced without a data fsync, then sent
    assert journal.index("sync_state") < journal.index("send")
    assert journal[-1] == "advanced"


def test_a_leaders_appends_leave_once_written_before_its_fsync():
    # Raft's 10.2.1: the followers write while the leader syncs; its own copy counts
    # towards commit only once durable (advance), so nothing is acknowledged earlier.
    node, driver, journal, host = _driver()
    node.campaign()
    run_sync(driver.handle_ready())
    node.step(next(iter(_grants(node))))
    journal.clear()
    host.sent.clear()
    run_sync(driver.handle_ready())  # the leader's no-op: appended, sent, fsynced
    assert journal[0] == "append"
    assert journal.index("append") < journal.index("send") < journal.index("sync") < journal.index("persisted")
    assert {type(m).__name__ for m in host.sent} == {"Append"} and len(host.sent) == 2
    assert journal.count("sync") == 1 and driver.fsyncs == 1
    # its own copy is durable, and counted; one of three is not a majority
    assert node.status().progress[1].match == node.log.last_index() > node.commit


def test_a_followers_acknowledgement_leaves_after_its_fsync():
    from raft import Append, AppendResponse, Entry

    node, driver, journal, host = _driver()
    node.step(Append(to=1, frm=2, term=1, prev_index=-1, prev_term=0, entries=(Entry(0, 0, 1),), commit=-1))
    run_sync(driver.handle_ready())
    assert [type(m) for m in host.sent] == [AppendResponse]
    assert journal.index("sync") < journal.index("send")


def test_a_leaders_appends_wait_for_a_term_not_yet_durable():
    # A storage that still has a term or vote to make durable holds every message,
    # appends included, until its sync.
    node, driver, journal, host = _driver()
    node.campaign()
    run_sync(driver.handle_ready())
    node.step(next(iter(_grants(node))))
    driver.storage.dirty = True  # (as if the term were not on disk yet)
    journal.clear()
    run_sync(driver.handle_ready())
    assert journal.index("sync") < journal.index("send")


def test_without_fsync_entries_are_not_synced_but_a_new_term_still_is():
    node, driver, journal, _ = _driver(fsync=False)
    node.campaign()
    run_sync(driver.handle_ready())
    node.step(next(iter(_grants(node))))
    run_sync(driver.handle_ready())
    assert "sync" not in journal and "sync_state" in journal and driver.fsyncs == 0


def test_a_crash_at_the_fsync_sends_nothing():
    node, st = make_node(1, voters=(1, 2, 3), pre_vote=False)
    journal: list[str] = []
    host = Host(journal)

    class Suspend:
        def __await__(self):
            yield "disk"

    async def run_later(fn, *args):
        await Suspend()
        return fn(*args)

    driver = ReadyDriver(node, Recording(st, journal), host, run_later)
    node.campaign()
    coro = driver.handle_ready()
    assert coro.send(None) == "disk"  # waiting on the sync
    coro.close()  # the machine stops
    assert "send" not in journal and not host.sent


def test_a_snapshot_is_written_installed_and_flushed_before_the_state_is_rebuilt():
    node, st = make_node(2, voters=(1, 2, 3))
    journal: list[str] = []

    class Snapshots(Recording):
        def write_snapshot(self, snap: Snapshot) -> None:
            journal.append("write_snapshot")

        def install_snapshot(self, snap: Snapshot) -> None:
            journal.append("install_snapshot")
            super().install_snapshot(snap)

        def flush_log(self) -> None:
            journal.append("flush_log")

    from raft import InstallSnapshot

    driver = ReadyDriver(node, Snapshots(st, journal), Host(journal), run_now)
    snap = Snapshot(index=9, term=1, conf=ConfState(voters=(1, 2, 3)), data=b"state")
    node.step(InstallSnapshot(to=2, frm=1, term=1, snapshot=snap))
    run_sync(driver.handle_ready())
    order = [j for j in journal if j in ("write_snapshot", "install_snapshot", "flush_log", "restored", "send")]
    assert order == ["write_snapshot", "install_snapshot", "flush_log", "restored", "send"]
    assert st.first_index() == 10


def _grants(node):
    from raft import VoteResponse

    return [VoteResponse(to=1, frm=v, term=node.term, granted=True) for v in (2, 3)]


# -- a Ready begun in one task and finished in another (ReadyDriver.begin) --------------


def _eager_runner(journal):
    """A runner that starts its work when called, as the node's kernel fsync does; the
    awaitable only collects it."""

    def run(fn, *args):
        journal.append("asked")
        result = fn(*args)

        async def collected():
            journal.append("collected")
            return result

        return collected()

    return run


def test_a_begun_followers_ready_writes_and_syncs_at_once_and_acks_only_when_finished():
    from raft import Append, AppendResponse, Entry

    node, st = make_node(1, voters=(1, 2, 3), pre_vote=False)
    journal: list[str] = []
    host = Host(journal)
    driver = ReadyDriver(node, Recording(st, journal), host, _eager_runner(journal))
    node.step(Append(to=1, frm=2, term=1, prev_index=-1, prev_term=0, entries=(Entry(0, 0, 1),), commit=-1))
    assert driver.begin() and driver.begun
    assert journal == ["append", "hard_state", "asked", "sync"] and not host.sent  # the ack waits
    assert not driver.begin() and not node.has_ready()  # one at a time; the core's Ready is out
    node.step(Append(to=1, frm=2, term=1, prev_index=0, prev_term=1, entries=(Entry(1, 1, 1),), commit=0))
    run_sync(driver.handle_ready())  # finishes the begun one only
    assert [type(m) for m in host.sent] == [AppendResponse] and host.sent[0].index == 0
    assert journal.index("collected") < journal.index("send") and driver.fsyncs == 1 and not driver.begun
    run_sync(driver.handle_ready())  # then the next, as usual
    assert [m.index for m in host.sent] == [0, 1]


def test_a_begun_ready_with_nothing_to_wait_for_is_done_at_once():
    """A commit that releases a produce: applied and advanced in the task that began it."""
    node, driver, journal, host = _driver()
    node.campaign()
    run_sync(driver.handle_ready())
    node.step(next(iter(_grants(node))))
    run_sync(driver.handle_ready())  # the no-op, sent
    journal.clear()
    from raft import AppendResponse

    node.step(AppendResponse(to=1, frm=2, term=node.term, index=node.log.last_index(), reject=False))
    assert driver.begin() and not driver.begun
    assert "sync" not in journal and journal[-2:] == ["apply", "advanced"]
    assert node.commit == node.log.last_index()


def test_begin_leaves_a_snapshot_to_handle_ready_and_an_error_to_raise_there():
    import pytest

    from raft import Append, Entry, InstallSnapshot

    node, st = make_node(2, voters=(1, 2, 3))
    driver = ReadyDriver(node, MemoryWriter(st), Host([]), run_now)
    snap = Snapshot(index=9, term=1, conf=ConfState(voters=(1, 2, 3)), data=b"state")
    node.step(InstallSnapshot(to=2, frm=1, term=1, snapshot=snap))
    assert not driver.begin() and node.has_ready()  # step 0 blocks: the driver's task does it all
    run_sync(driver.handle_ready())

    class Full(MemoryWriter):
        def append(self, entries):
            raise OSError(28, "No space left on device")

    node, st = make_node(1, voters=(1, 2, 3), pre_vote=False)
    driver = ReadyDriver(node, Full(st), Host([]), run_now)
    node.step(Append(to=1, frm=2, term=1, prev_index=-1, prev_term=0, entries=(Entry(0, 0, 1),), commit=-1))
    assert driver.begin() and driver.begun
    with pytest.raises(OSError, match="No space"):
        run_sync(driver.handle_ready())
