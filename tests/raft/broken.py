"""Ready drivers that break persist-before-send, to prove the simulator's checker
catches them on the first seeds, without needing a crash to land in the window."""

from __future__ import annotations

from raft.core import Ready
from raft.driver import ReadyDriver


class SendsEarly(ReadyDriver):
    """`ReadyDriver`'s steps with the sends moved earlier: to the very start (`FIRST`:
    votes, acks and the term itself leave before the disk has them), or after the term
    and vote are durable but before the entries' fsync (`BEFORE_FSYNC`: only the
    acknowledgements break the rule, in the window a crash test needs luck to hit)."""

    def begin(self) -> bool:
        return False  # (every Ready goes through the broken handle_ready)

    FIRST = "first"
    BEFORE_FSYNC = "before_fsync"
    when = FIRST

    async def handle_ready(self) -> Ready:
        core, st, host, run = self.core, self.storage, self.host, self.run
        rd = core.ready()
        if self.when == self.FIRST:
            self._send(rd)
        if rd.snapshot is not None:
            await run(st.write_snapshot, rd.snapshot)
            st.install_snapshot(rd.snapshot)
            await run(st.flush_log)
            host.restored(rd.snapshot)
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        if st.state_dirty:
            await run(st.sync, False)
        if self.when == self.BEFORE_FSYNC:
            self._send(rd)
        if rd.entries:
            await run(st.sync)
        host.persisted(rd)
        if rd.snapshot is not None or rd.committed_entries:
            host.apply(rd)
        core.advance(rd)
        host.advanced(rd)
        return rd

    def _send(self, rd: Ready) -> None:
        for m in rd.messages:
            self.host.send(m)


class SendsBeforeFsync(SendsEarly):
    when = SendsEarly.BEFORE_FSYNC
