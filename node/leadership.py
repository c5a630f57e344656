"""Work a node does as the leader of a partition: one task per partition and term.

The delay schedulers and the half coordinators each run a task on every partition of
their internal topic that this node leads. `LeaderTasks.reconcile` (called from the
service's janitor) starts one once the partition's leader has applied an entry of its
own term (its state is then complete), and cancels it when leadership goes or the term
changes: a task never carries in-memory progress from one term into the next, where
another leader may have worked in between.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

import trio

from client.errors import TideMQError
from node.replica import Replica

R = TypeVar("R", bound=Replica)

log = logging.getLogger(__name__)


class LeaderTasks(Generic[R]):
    def __init__(self, what: str, work: Callable[[R], Awaitable[None]]) -> None:
        self.what = what
        self._work = work
        self._running: dict[int, tuple[int, trio.CancelScope]] = {}  # group -> (term, scope)

    def reconcile(self, nursery: trio.Nursery, parts: Iterable[R]) -> None:
        for part in parts:
            running = self._running.get(part.group)
            leading = part.is_leader and not part.closed
            if running is not None and (not leading or running[0] != part.core.term):
                running[1].cancel()
                del self._running[part.group]
                running = None
            if leading and running is None and part.ready_for_writes():
                scope = trio.CancelScope()
                self._running[part.group] = (part.core.term, scope)
                nursery.start_soon(self._run, part, scope)

    async def _run(self, part: R, scope: trio.CancelScope) -> None:
        with scope:
            try:
                await self._work(part)
            except* TideMQError as group:  # lost the lead, or a write timed out: reconcile starts it again
                log.info("%s: %s stopped: %s", part.name, self.what, group.exceptions[0])
            finally:
                if self._running.get(part.group, (0, None))[1] is scope:
                    del self._running[part.group]
