"""The halves workload: half messages with check-back (RocketMQ-style transactional
messages) written by services with a local database, read by a consumer group.

Each writer plays a service: `send_half`, then its "local transaction" (commits, or on
purpose about one time in five rolls back), then `commit()` / `abort()`; about one time
in ten it "crashes" between its local commit and `commit()`, leaving the half to the
check-back. The local
database is `db` (values whose local transaction committed) plus `deciding` (sent, not
decided yet); every writer's producer has a `transaction_checker` that answers from it,
True / False / None (still deciding), as a real service would. So the guarantee checked
is the whole of RocketMQ's: a message whose local transaction committed is in its topic
exactly once, even when `commit()` itself failed (the check-back commits it then); one
whose local transaction rolled back, or that never got that far, is never there.

How sends are recorded:
- `commit()` answered: acked, at the offset it returned;
- `commit()` failed, or was never called, with the local transaction committed: acked
  with no offset (the check-back must deliver it; the checker finds it by value), and
  after a failure the session ends;
- rolled back on purpose, or `send_half` itself failed: failed (must never appear).
Keys are unique per message: half messages promise no order once a commit fails and the
check-back lands it later, and the checker holds keys to their order.
"""

from __future__ import annotations

import random

import trio

from client import Producer
from client.errors import TideMQError
from scripts.chaoslib.history import describe_error
from scripts.chaoslib.workloads.base import wait_landed
from scripts.chaoslib.workloads.queue import QueueWorkload


class HalvesWorkload(QueueWorkload):
    name = "halves"
    topic = "chaos-halves"
    group = "chaos-halves-group"
    writer_prefix = "h"
    member_prefix = "hc"
    producer_group = "chaos-halves-svc"

    def __init__(
        self,
        ctx,
        *,
        writers: int = 2,
        rate: float = 4.0,
        consumers: int = 2,
        rollback: float = 0.2,
        forget: float = 0.1,
        check_after: float = 1.0,
        land_timeout: float = 120.0,
        **kwargs,
    ) -> None:
        super().__init__(ctx, writers=writers, rate=rate, consumers=consumers, **kwargs)
        self.rollback = rollback
        self.forget = forget
        self.check_after = check_after
        self.land_timeout = land_timeout
        self.db: set[str] = set()
        self.deciding: set[str] = set()
        self._landing: set[str] = set()  # committed locally, commit() failed: the check-back owes them

    async def _check(self, msg) -> bool | None:
        value = msg.value.decode()
        if value in self.db:
            return True
        return None if value in self.deciding else False

    async def _write(self, writer: str, stop: trio.Event) -> None:
        h = self.ctx.history
        rng = self.ctx.rng(f"{self.name}-{writer}")
        n = 0
        session = 0
        while not stop.is_set():
            session += 1
            try:
                async with Producer(
                    self.ctx.bootstrap,
                    request_timeout=self.request_timeout,
                    delivery_timeout=self.delivery_timeout,
                    client_id=f"{writer}.{session}",
                    producer_group=self.producer_group,
                    transaction_checker=self._check,
                    check_after=self.check_after,
                    max_checks=30,
                ) as producer:
                    h.record("session", writer=writer, session=session, producer_id=producer.producer_id)
                    while not stop.is_set():
                        n += 1
                        if not await self._one(producer, writer, session, f"{writer}-{n}", rng):
                            break
                        await trio.sleep(rng.expovariate(self.rate))
            except Exception as exc:  # noqa: BLE001 - recorded; a new session starts, as in the queue workload
                h.record("session_error", writer=writer, session=session, error=describe_error(exc))
                await trio.sleep(0.5)

    async def _one(self, producer: Producer, writer: str, session: int, value: str, rng: random.Random) -> bool:
        """One service transaction; False when the session must end (an error)."""
        h = self.ctx.history
        fields = dict(writer=writer, session=session, topic=self.topic, key=value, seq=0, value=value, idempotent=True)
        t = h.now()
        self.deciding.add(value)
        try:
            half = await producer.send_half(self.topic, value.encode(), key=value.encode())
        except (TideMQError, OSError, TimeoutError) as exc:
            self.deciding.discard(value)  # never got to the local transaction: the check-back aborts it
            h.record(
                "send",
                t=t,
                t_end=h.now(),
                partition=None,
                **fields,
                outcome="failed",
                offset=None,
                error=f"send_half failed, so the local transaction never ran: {exc!r}"[:300],
            )
            return False
        if rng.random() < self.rollback:
            self.deciding.discard(value)
            try:
                await half.abort("the local transaction rolled back")
            except (TideMQError, OSError, TimeoutError):
                pass  # the check-back answers False
            h.record(
                "send",
                t=t,
                t_end=h.now(),
                partition=None,
                **fields,
                outcome="failed",
                offset=None,
                error="rolled back on purpose",
            )
            return True
        self.db.add(value)
        self.deciding.discard(value)
        if rng.random() < self.forget:
            self._landing.add(value)
            h.record(
                "send",
                t=t,
                t_end=h.now(),
                partition=None,
                **fields,
                outcome="acked",
                offset=None,
                error="committed locally, then 'crashed' before commit(): the check-back owes it",
            )
            return True
        try:
            md = await half.commit()
        except (TideMQError, OSError, TimeoutError) as exc:
            self._landing.add(value)
            h.record(
                "send",
                t=t,
                t_end=h.now(),
                partition=None,
                **fields,
                outcome="acked",
                offset=None,
                error=f"commit() failed, the check-back owes it: {exc!r}"[:300],
            )
            return False
        h.record("send", t=t, t_end=h.now(), partition=md.partition, **fields, outcome="acked", offset=md.offset)
        return True

    async def _before_final_read(self) -> None:
        """Until every half whose commit() failed has been committed by a check-back."""
        if not self._landing:
            return
        async with Producer(
            self.ctx.bootstrap,
            producer_group=self.producer_group,
            transaction_checker=self._check,
            client_id="halves-checker",
        ):  # a live producer of the group to be asked
            missing = await wait_landed(self.ctx, self.topics, self._landing, self.land_timeout)
        if missing:
            self.ctx.say(
                f"[red]{self.name}: {missing} half message(s) committed locally are not in {self.topic} "
                f"{self.land_timeout:.0f}s after the writers stopped[/]"
            )
