"""Blocking `Admin`, `Producer` and `Consumer` for scripts, notebooks and REPLs.

    from client import sync

    with sync.Producer("127.0.0.1:9401") as producer:
        meta = producer.send("orders", b"paid", key=b"order-17")

    with sync.Consumer("127.0.0.1:9401", group="billing", topics=["orders"]) as consumer:
        for msg in consumer:
            ...
            consumer.commit()

    with sync.Producer("127.0.0.1:9401", transactional_id="billing-1") as producer:
        with producer.transaction():            # commit on normal exit, abort on exception
            producer.send("orders", b"...")
            producer.send_offsets(consumer)     # the consumer's offsets commit with it

Each object runs its async twin (`client.Admin`, `client.Producer`, `client.Consumer`)
on a trio event loop in a background thread (anyio's blocking portal) and hands every
call to that loop. Nothing is re-implemented: retries, batching, idempotence and group
membership are the async classes' own, so both faces behave alike. Each object has its
own thread, so closing one never waits on another.

Cancel scopes do not cross threads, so the blocking face takes a timeout where the async
one takes a scope: `Consumer.poll(timeout)`. Use these classes from plain code only: a
blocking call made on an event loop's thread would stall that loop (and deadlock if the
loop also hosts the brokers), so it is refused with `RuntimeError`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import anyio
import sniffio
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal

from client.admin import Admin as AsyncAdmin
from client.consumer import Consumer as AsyncConsumer
from client.consumer import Message
from client.half import HalfMessage as AsyncHalfMessage
from client.producer import Delivery, RecordMetadata
from client.producer import Producer as AsyncProducer
from client.records import GroupMetadata

__all__ = ["Admin", "Consumer", "Producer"]

T = TypeVar("T")
P = ParamSpec("P")
A = TypeVar("A", AsyncAdmin, AsyncProducer, AsyncConsumer)


class _LeaveWithError(Exception):
    """Raised inside the loop so the async client's `__aexit__` sees that the caller's
    `with` block failed (a Producer then skips its final flush, as it does in async code)."""


def _refuse_inside_event_loop() -> None:
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return
    raise RuntimeError(
        f"client.sync blocks its thread, and this thread runs a {library} event loop; "
        "in async code use client.Admin, client.Producer and client.Consumer"
    )


class _Blocking(Generic[A]):
    """Owns the portal thread and keeps the async client entered in one task there.

    The host task (`_host`) stays inside `async with client` until `close()`. Every call
    waits on its own future and on the host's: if the client dies (an error in one of its
    background tasks ends its task group), a blocked call raises that error instead of
    waiting forever.
    """

    def __init__(self, make: Callable[[], A]) -> None:
        _refuse_inside_event_loop()
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal("trio")
        self._portal = self._portal_cm.__enter__()
        self._closed = False
        self._failed = False
        try:
            self._async: A = self._portal.call(make)
            self._host_done, _ = self._portal.start_task(self._host)
        except BaseException:
            self._closed = True
            self._stop_portal()
            raise

    async def _host(self, *, task_status: TaskStatus[None]) -> None:
        self._leave = anyio.Event()
        try:
            async with self._async:
                task_status.started()
                await self._leave.wait()
                if self._failed:
                    raise _LeaveWithError
        except* _LeaveWithError:
            pass

    def _stop_portal(self) -> None:
        # Whatever still runs on the loop can no longer finish (its client is closed):
        # cancel it rather than wait.
        try:
            self._portal.call(self._portal.stop, True)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn` (async or not) on the loop and wait for it, or for the client's end."""
        _refuse_inside_event_loop()
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed")
        future: Future[Any] = self._portal.start_task_soon(functools.partial(fn, *args, **kwargs))
        try:
            wait([future, self._host_done], return_when=FIRST_COMPLETED)
        except BaseException:  # KeyboardInterrupt while waiting: stop the call on the loop too
            future.cancel()
            raise
        if not future.done():
            future.cancel()
            self._host_done.result()  # raises what ended the client
            raise RuntimeError(f"this {type(self).__name__} stopped")
        return future.result()

    def close(self) -> None:
        """Leave the async client's context (a Producer flushes first), stop the thread."""
        self._finish(failed=False)

    def _finish(self, failed: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._failed = failed
        try:
            self._portal.call(self._leave.set)
            self._host_done.result()
        finally:
            self._stop_portal()

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish(failed=exc_type is not None)


def _adapt_checker(options: dict[str, Any]) -> dict[str, Any]:
    if "transaction_checker" in options:
        options["transaction_checker"] = _async_checker(options["transaction_checker"])
    return options


def _async_checker(checker: Callable[[AsyncHalfMessage], Any] | None):
    """A plain checker function runs in a worker thread (it may block on a database)."""
    if checker is None or inspect.iscoroutinefunction(checker):
        return checker

    async def in_thread(msg: AsyncHalfMessage) -> bool | None:
        return await anyio.to_thread.run_sync(checker, msg)

    return in_thread


def _twin_init(
    async_cls: Callable[P, A], adapt: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> Callable[Concatenate[Any, P], None]:
    """The `__init__` of a blocking twin: it takes exactly the async class's arguments
    (its signature, shown by `help()` and editors, is the async class's), so an option
    is added in one place. `adapt` rewrites keyword arguments that must change shape on
    the way (a plain-function checker becomes async)."""

    def __init__(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> None:
        options: dict[str, Any] = adapt(dict(kwargs)) if adapt is not None else dict(kwargs)
        _Blocking.__init__(self, functools.partial(async_cls, *args, **options))

    params: list[inspect.Parameter] = list(inspect.signature(async_cls).parameters.values())
    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *params], return_annotation=None
    )
    __init__.__doc__ = f"Takes the arguments of the async `{async_cls.__module__}.{async_cls.__qualname__}`."
    return __init__


R = TypeVar("R")


@overload
def _forward(method: Callable[Concatenate[Any, P], Awaitable[R]]) -> Callable[Concatenate[Any, P], R]: ...
@overload
def _forward(
    method: Callable[Concatenate[Any, P], Awaitable[R]], then: Callable[[Any, R], T]
) -> Callable[Concatenate[Any, P], T]: ...
def _forward(method: Callable[..., Any], then: Callable[[Any, Any], Any] | None = None) -> Callable[..., Any]:
    """A blocking twin's method: the async method's own arguments (its signature and
    docstring, so an option is added in one place), run on the twin's loop; `then`
    turns the async answer into the blocking one."""
    name = method.__name__

    def call(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        result = self._call(getattr(self._async, name), *args, **kwargs)
        return result if then is None else then(self, result)

    return functools.update_wrapper(call, method)


class Admin(_Blocking[AsyncAdmin]):
    """Blocking `client.Admin`: topics and the cluster's shape."""

    __init__ = _twin_init(AsyncAdmin)

    create_topic = _forward(AsyncAdmin.create_topic)
    wait_for_leaders = _forward(AsyncAdmin.wait_for_leaders)
    delete_topic = _forward(AsyncAdmin.delete_topic)
    list_topics = _forward(AsyncAdmin.list_topics)
    describe_topic = _forward(AsyncAdmin.describe_topic)
    describe_cluster = _forward(AsyncAdmin.describe_cluster)
    describe_transaction = _forward(AsyncAdmin.describe_transaction)
    list_transactions = _forward(AsyncAdmin.list_transactions)
    survey_transactions = _forward(AsyncAdmin.survey_transactions)
    list_halves = _forward(AsyncAdmin.list_halves)


class Producer(_Blocking[AsyncProducer]):
    """Blocking `client.Producer`.

    `send` returns once the message is acknowledged: a round trip per call. For many
    messages use `submit`, which returns as soon as the message is queued (so submitted
    messages keep their order) with a future for the acknowledgement: they share batches.

    With `transactional_id`, sends belong to transactions (`with producer.transaction():`
    or begin/commit/abort), exactly as in `client.Producer`: the async producer keeps the
    transaction's state, these methods only carry the calls to its loop.

    With `producer_group`, `send_half` stores half messages (client/half.py); a
    `transaction_checker` may be a plain function (run in a worker thread) or async.
    """

    __init__ = _twin_init(AsyncProducer, _adapt_checker)

    send = _forward(AsyncProducer.send)
    submit = _forward(
        AsyncProducer.submit, lambda self, delivery: self._portal.start_task_soon(_acknowledged, delivery)
    )
    submit.__doc__ = """Queue one message and return once it is queued, with a
    `concurrent.futures.Future` that resolves to its RecordMetadata when acknowledged (or
    raises what made the send fail); the arguments are `client.Producer.submit`'s."""

    send_batch = _forward(AsyncProducer.send_batch)

    def flush(self) -> None:
        """Wait until everything sent so far (from any thread) is acknowledged."""
        self._call(self._async.flush)

    # -- half messages -------------------------------------------------------------------------

    send_half = _forward(AsyncProducer.send_half, lambda self, half: HalfMessage(self, half))

    def commit_half(self, half_id: str) -> RecordMetadata:
        return self._call(self._async.commit_half, half_id)

    def abort_half(self, half_id: str, reason: str = "aborted by the producer") -> None:
        self._call(self._async.abort_half, half_id, reason)

    # -- transactions ----------------------------------------------------------------------------

    @property
    def transactional_id(self) -> str | None:
        return self._async.transactional_id

    def begin_transaction(self) -> None:
        """Open a transaction: every send until commit or abort belongs to it."""
        self._call(self._async.begin_transaction)

    def commit_transaction(self) -> None:
        """Deliver every send of the transaction, then commit it: when this returns, all of
        it is visible to read_committed consumers. If a send failed this raises its error
        and the transaction stays open: abort it."""
        self._call(self._async.commit_transaction)

    def abort(self) -> None:
        """Abort the open transaction: none of its messages or offsets ever become visible
        to read_committed consumers."""
        self._call(self._async.abort)

    def send_offsets(
        self, consumer: Consumer | GroupMetadata, offsets: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        """Commit a group consumer's offsets with the open transaction (by default its
        current commit points), or, given its `group_metadata()`, the `offsets` named. A
        consumer's points and metadata are read on its own loop: its assignment changes
        there, and reading it from this producer's thread could race."""
        if isinstance(consumer, Consumer):
            if offsets is None:
                offsets = consumer._call(consumer._async.commit_points)
            consumer = consumer.group_metadata()
        self._call(self._async.send_offsets, consumer, offsets)

    @contextmanager
    def transaction(self) -> Iterator[Producer]:
        """`with producer.transaction():` commits on normal exit and aborts when the body
        raises, re-raising its exception. The async producer's own `transaction()` runs
        on the loop for the length of the block (the portal carries the body's exception
        into it), so both faces decide alike."""
        _refuse_inside_event_loop()
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed")
        with self._portal.wrap_async_context_manager(self._async.transaction()):
            yield self


class HalfMessage:
    """Blocking face of `client.half.HalfMessage`: the same fields, blocking decisions."""

    def __init__(self, producer: Producer, half: AsyncHalfMessage) -> None:
        self._producer = producer
        self._half = half
        self.id, self.topic, self.key, self.value = half.id, half.topic, half.key, half.value
        self.headers, self.timestamp = half.headers, half.timestamp

    def __repr__(self) -> str:
        return f"sync.{self._half!r}"

    def commit(self) -> RecordMetadata:
        """Make it visible in its topic (exactly once); where it landed."""
        return self._producer._call(self._half.commit)

    def abort(self, reason: str = "aborted by the producer") -> None:
        self._producer._call(self._half.abort, reason)


async def _acknowledged(delivery: Delivery) -> RecordMetadata:
    return await delivery


class Consumer(_Blocking[AsyncConsumer]):
    """Blocking `client.Consumer`: iterate for messages, `poll(timeout)` to wait bounded."""

    __init__ = _twin_init(AsyncConsumer)

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        """The next message; waits as long as it takes (a consumer's stream has no end)."""
        return self._call(self._async.__anext__)

    def poll(self, timeout: float | None = None) -> Message | None:
        """The next message, or None if none arrives within `timeout` seconds."""
        return self._call(self._next_within, timeout)

    async def _next_within(self, timeout: float | None) -> Message | None:
        with anyio.move_on_after(timeout):
            return await self._async.__anext__()
        return None

    def getmany(
        self, max_records: int | None = None, timeout: float | None = None
    ) -> dict[tuple[str, int], list[Message]]:
        """Every message fetched and not handed out yet, by partition (see
        `client.Consumer.getmany`); {} if none arrives within `timeout` seconds."""
        return self._call(self._async.getmany, max_records, timeout)

    def commit(self) -> None:
        """Commit the offset after the last message handed out, in every assigned partition."""
        self._call(self._async.commit)

    def group_metadata(self) -> GroupMetadata:
        """For a transactional producer's `send_offsets` (see `client.Consumer.group_metadata`)."""
        return self._call(self._async.group_metadata)

    @property
    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this consumer reads now."""
        return self._call(lambda: self._async.assignment)
