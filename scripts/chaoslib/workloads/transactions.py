"""The transactions workload: transactional producers writing to two topics at once, some
transactions aborted on purpose, and a read_committed consumer group over both.

Writers. `t1, t2` each keep one transactional id (`chaos-t1`...) for the whole run, so a
new session (after any failure) fences the previous producer, as a restarted application
instance would. Each transaction `tN-xM` sends 2-6 messages alternately to
`chaos-txn-a` and `chaos-txn-b` (values and keys as the queue workload's, each send event
carrying `txn`), then commits, or aborts when the seed says so (a quarter of them).

Outcomes, and why they are sure:
- committed: `commit_transaction()` returned;
- aborted: `abort()` was asked for on purpose, or a send failed so the commit was never
  asked for. Either way nothing can ever commit it (only our EndTxn(commit) could), so
  even when the abort itself is not acknowledged the coordinator aborts it at its
  transaction timeout or when the next session fences this one;
- unknown: the commit was asked for and its answer did not come (a timeout, a lost
  connection): committed or not, it must be all or nothing.
The `txn` event's `t` is when the commit or abort was asked for: no read_committed reader
may see any of its messages before that.

Readers. The queue workload's consumer group, members `tc1, tc2` in
`chaos-txn-group`, read_committed over both topics. The final read drops aborted
transactions itself (`workloads.base`).
"""

from __future__ import annotations

import time
from collections import defaultdict

import trio

from client import Producer
from client.errors import TideMQError
from client.producer import Delivery
from scripts.chaoslib.history import describe_error
from scripts.chaoslib.workloads.base import Context
from scripts.chaoslib.workloads.queue import DEFINITE, Message, QueueWorkload

ABORT_SHARE = 0.25
MESSAGES = (2, 6)  # per transaction, alternating between the two topics


class TransactionsWorkload(QueueWorkload):
    name = "transactions"
    partitions = 3
    topic = "chaos-txn-a"
    other_topic = "chaos-txn-b"
    group = "chaos-txn-group"
    writer_prefix = "t"
    member_prefix = "tc"

    def __init__(
        self,
        ctx: Context,
        *,
        writers: int = 2,
        rate: float = 2.0,
        consumers: int = 2,
        transaction_timeout: float = 10.0,
        **kwargs,
    ) -> None:
        super().__init__(ctx, writers=writers, rate=rate, consumers=consumers, **kwargs)
        self.transaction_timeout = transaction_timeout

    @property
    def topics(self) -> list[str]:
        return [self.topic, self.other_topic]

    async def _write(self, writer: str, stop: trio.Event) -> None:
        """Transactions at `rate` a second; a new session (same transactional id) after
        any transaction whose outcome was not clean."""
        h = self.ctx.history
        rng = self.ctx.rng(f"{self.name}-{writer}")
        seqs: dict[str, int] = defaultdict(int)
        count = session = 0
        while not stop.is_set():
            session += 1
            try:
                async with Producer(
                    self.ctx.bootstrap,
                    transactional_id=f"chaos-{writer}",
                    transaction_timeout=self.transaction_timeout,
                    request_timeout=self.request_timeout,
                    delivery_timeout=self.delivery_timeout,
                    client_id=f"{writer}.{session}",
                ) as producer:
                    h.record(
                        "session",
                        writer=writer,
                        session=session,
                        producer_id=producer.producer_id,
                        transactional_id=f"chaos-{writer}",
                    )
                    next_at = time.monotonic()
                    while not stop.is_set():
                        count += 1
                        messages = [self._compose(writer, rng, seqs) for _ in range(rng.randint(*MESSAGES))]
                        if not await self._transaction(
                            producer, writer, session, f"{writer}-x{count}", messages, abort=rng.random() < ABORT_SHARE
                        ):
                            break
                        next_at = max(next_at + 1 / self.rate, time.monotonic() - 1.0)
                        await trio.sleep(max(0.0, next_at - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - recorded; the next session fences this one
                h.record("session_error", writer=writer, session=session, error=describe_error(exc))
                await trio.sleep(0.5)

    async def _transaction(
        self, producer: Producer, writer: str, session: int, txn: str, messages: list[Message], abort: bool
    ) -> bool:
        """One transaction, recorded; True if it ended cleanly (committed or aborted as
        meant) and the session may go on."""
        h = self.ctx.history
        sent: list[tuple[str, Message, float, Delivery]] = []
        outcome, error, asked = "aborted", None, None
        await producer.begin_transaction()
        try:
            for i, m in enumerate(messages):
                topic = (self.topic, self.other_topic)[i % 2]
                t = h.now()
                sent.append((topic, m, t, await producer.submit(topic, m.value.encode(), key=m.key.encode())))
            asked = h.now()
            if abort:
                await producer.abort()
            else:
                await producer.commit_transaction()
                outcome = "committed"
        except (TideMQError, TimeoutError, OSError) as exc:
            error = describe_error(exc)
            failed_send = any(d.done and _failed(d) for _, _, _, d in sent) or asked is None
            if not abort and not failed_send:
                outcome = "unknown"  # the commit was asked for; its answer is lost
            with trio.move_on_after(self.request_timeout):
                try:
                    await producer.abort()
                except (TideMQError, RuntimeError):
                    pass  # none open any more, or not acknowledged: the coordinator aborts it at its timeout
        finally:
            for topic, m, t, d in sent:
                self._record_send(writer, session, topic, m, t, d, txn)
            h.record(
                "txn",
                t=asked if asked is not None else h.now(),
                t_end=h.now(),
                txn=txn,
                producer=writer,
                session=session,
                intent="abort" if abort else "commit",
                outcome=outcome,
                error=error,
                messages=len(sent),
            )
        return error is None

    def _record_send(self, writer: str, session: int, topic: str, m: Message, t: float, d: Delivery, txn: str) -> None:
        h = self.ctx.history
        fields = dict(
            t=t,
            t_end=h.at(d.acked_at) if d.acked_at is not None else h.now(),
            writer=writer,
            session=session,
            topic=topic,
            partition=d.partition,
            key=m.key,
            seq=m.seq,
            value=m.value,
            idempotent=True,
            txn=txn,
        )
        if not d.done:
            h.record("send", **fields, outcome="unknown", offset=None, error="no outcome when the transaction ended")
            return
        try:
            md = d.result()
        except DEFINITE as exc:
            h.record("send", **fields, outcome="failed", offset=None, error=repr(exc)[:300])
        except (TideMQError, OSError) as exc:
            h.record("send", **fields, outcome="unknown", offset=None, error=repr(exc)[:300])
        else:
            h.record("send", **fields, outcome="acked", offset=md.offset)


def _failed(d: Delivery) -> bool:
    try:
        d.result()
    except Exception:  # noqa: BLE001 - any error: the send did not succeed
        return True
    return False
