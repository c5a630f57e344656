"""Broadcast through independent groups, against three live node processes: every
instance of a broadcast group gets every message, resumes where it left off, retries
and dead-letters on its own, shows up in `tidemq group list|describe` and expires."""

from __future__ import annotations

import io
import sys
from collections import defaultdict

import pytest
import trio

from client import Admin, Consumer, Producer
from client.cli import main
from client.consumer import Message
from client.dlq import list_dead_letters, replay_dead_letters
from client.errors import InvalidConfigError
from tests.client.test_cli import rows
from tests.cluster import process_cluster

pytestmark = pytest.mark.timeout(180)

KEYS = [b"k%d" % k for k in range(5)]


async def publish(bootstrap: str, topic: str, tag: str, n: int) -> list[bytes]:
    """`n` keyed messages `tag-i`; the values in the order sent."""
    values = [b"%s-%d" % (tag.encode(), i) for i in range(n)]
    async with Producer(bootstrap) as producer:
        for i, v in enumerate(values):
            await producer.submit(topic, v, key=KEYS[i % len(KEYS)])
        await producer.flush()
    return values


async def take(consumer: Consumer, n: int, into: list[Message], timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        async for msg in consumer:
            into.append(msg)
            if len(into) >= n:
                return


async def positioned(consumer: Consumer, partitions: int) -> None:
    """Until the instance holds every partition and knows where it reads from (a new
    instance starts at the end of the log: what is sent before that is not its)."""
    with trio.fail_after(30):
        while len(consumer.assignment) < partitions or any(s.position is None for s in consumer._assigned.values()):
            await trio.sleep(0.05)


def instance(bootstrap: str, iid: str, **kw) -> Consumer:
    return Consumer(
        bootstrap, topics=["news"], broadcast=True, group="notifier", instance_id=iid, session_timeout=3.0, **kw
    )


def per_key(msgs: list[Message]) -> dict[bytes | None, list[bytes | None]]:
    out: dict[bytes | None, list[bytes | None]] = defaultdict(list)
    for m in msgs:
        out[m.key].append(m.value)
    return out


def cli(bootstrap: str, *argv: str) -> tuple[int, str]:
    """`tidemq ARGS...` in-process (called from a worker thread: it runs its own trio)."""
    out, err = io.StringIO(), io.StringIO()
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = main(["--bootstrap", bootstrap, *argv])
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    return code, out.getvalue() + err.getvalue()


@pytest.fixture
async def cluster(tmp_path):
    # A short offsets retention, so an idle instance expires within the test.
    async with process_cluster(tmp_path, 3, fsync="never", settings={"offsets_retention_ms": 4000}) as c:
        await c.wait_ready()
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic("news", partitions=3, replication=3)
        yield c


async def test_every_instance_gets_every_message_once_and_a_restart_resumes(cluster):
    boot = cluster.bootstrap
    got: dict[str, list[Message]] = {"a": [], "b": [], "c": []}
    async with instance(boot, "a") as a, instance(boot, "b") as b, instance(boot, "c") as c:
        assert {a.group, b.group, c.group} == {"notifier@a", "notifier@b", "notifier@c"}
        for consumer in (a, b, c):
            await positioned(consumer, 3)
        first = await publish(boot, "news", "first", 30)
        for name, consumer in (("a", a), ("b", b), ("c", c)):
            await take(consumer, 30, got[name])
            await consumer.commit()
        async with instance(boot, "b"):  # another process with b's id: shares b's partitions
            pass
        for name in got:
            assert sorted(m.value for m in got[name]) == sorted(first), name
    # b is down while the others read on
    missed = await publish(boot, "news", "missed", 30)
    async with instance(boot, "a") as a, instance(boot, "c") as c:
        for name, consumer in (("a", a), ("c", c)):
            await take(consumer, 60, got[name])
    got_b: list[Message] = []
    async with instance(boot, "b") as b:  # resumes after what it committed
        await take(b, 30, got_b)
        with trio.move_on_after(2):
            await take(b, 1, got_b)  # and nothing more
    assert sorted(m.value for m in got_b) == sorted(missed)
    assert per_key(got_b) == per_key([Message("news", 0, 0, KEYS[i % 5], v, (), 0) for i, v in enumerate(missed)])
    for name in ("a", "c"):
        assert sorted(m.value for m in got[name]) == sorted(first + missed), name
    # a new instance starts at the end of the log
    async with instance(boot, "d") as d:
        await positioned(d, 3)
        later = await publish(boot, "news", "later", 6)
        got_d: list[Message] = []
        await take(d, 6, got_d)
        with trio.move_on_after(1):
            await take(d, 1, got_d)
    assert sorted(m.value for m in got_d) == sorted(later)


async def test_a_failing_handler_retries_and_dead_letters_on_its_own_instance(cluster):
    boot = cluster.bootstrap
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    broken = {"b"}

    def handler(name: str):
        async def handle(msg: Message) -> None:
            seen[name].append(msg.value)
            if msg.value == b"poison" and name in broken:
                raise ValueError("b cannot take poison")

        return handle

    async def run(name: str, consumer: Consumer, finished: int) -> None:
        """Until `finished` messages are done (then run() commits and returns)."""
        with trio.fail_after(60):
            await consumer.run(
                handler(name), mode="concurrent", retries=1, backoff=0.05, max_backoff=0.1, max_messages=finished
            )

    async def idle(name: str, consumer: Consumer, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await consumer.run(handler(name), mode="concurrent")

    async with instance(boot, "a") as a, instance(boot, "b") as b:
        for consumer in (a, b):
            await positioned(consumer, 3)
        async with Producer(boot) as producer:
            for v in (b"fine-1", b"poison", b"fine-2"):
                await producer.send("news", v, key=v)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "a", a, 3)
            nursery.start_soon(run, "b", b, 4)  # poison twice: handed to the retry topic, then dead-lettered
    assert sorted(seen["a"]) == [b"fine-1", b"fine-2", b"poison"]
    assert sorted(seen["b"]) == [b"fine-1", b"fine-2", b"poison", b"poison"]
    letters = await list_dead_letters(boot, "notifier", idle=1.0)
    assert [(d.message.value, d.instance, d.attempts) for d in letters] == [(b"poison", "b", 2)]
    assert letters[0].error.startswith("ValueError: b cannot take poison")
    code, listed = await trio.to_thread.run_sync(cli, boot, "dlq", "list", "notifier", "--idle", "0.5")
    assert code == 0 and [(r[0], r[3], r[4], r[7], r[9]) for r in rows(listed, 10)] == [
        ("news", "b", "2", "poison", "-")
    ]
    # b is fixed; the replay goes to b alone (through the group's retry topic), not to a
    broken.clear()
    seen["a"].clear()
    seen["b"].clear()
    assert [d.instance for d in await replay_dead_letters(boot, "notifier", idle=1.0)] == ["b"]
    async with instance(boot, "a") as a, instance(boot, "b") as b:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "b", b, 1)
            nursery.start_soon(idle, "a", a, 5.0)
    assert seen == {"a": [], "b": [b"poison"]}


async def test_group_list_and_describe_show_instances_lag_and_expiry(cluster):
    boot = cluster.bootstrap
    async with instance(boot, "a") as a:
        await positioned(a, 3)
        async with instance(boot, "b") as b:
            await positioned(b, 3)
            await b.commit()
        await publish(boot, "news", "x", 10)  # b is gone: it falls 10 behind
        await take(a, 10, [])
        await a.commit()
        code, listed = await trio.to_thread.run_sync(cli, boot, "group", "list")
        assert code == 0
        table = rows(listed, 5)
        assert ["notifier", "broadcast: 2 instance(s)", "-", "1", "10"] in table
        assert [(r[1], r[3], r[4]) for r in table if r[0] == ""] == [("a", "1", "0"), ("b", "0", "10")]
        code, described = await trio.to_thread.run_sync(cli, boot, "group", "describe", "notifier")
        assert code == 0 and "broadcast group notifier: 2 instance(s)" in described
        by_instance = {r[0]: r for r in rows(described, 6)}
        assert by_instance["a"][1:5] == ["notifier@a", "1", "0", "now (live)"]
        assert by_instance["b"][1:4] == ["notifier@b", "0", "10"] and by_instance["b"][4].endswith(" ago")
        # b stays away longer than the offsets' retention (4 s here): it is expired, a is not
        with trio.fail_after(30):
            while True:
                code, listed = await trio.to_thread.run_sync(cli, boot, "group", "list")
                instances = [(r[1], r[3]) for r in rows(listed, 5) if r[0] == ""]
                if instances == [("a", "1")]:
                    break
                assert instances == [("a", "1"), ("b", "0")]
                await trio.sleep(0.5)


async def test_the_cli_consumes_as_a_broadcast_instance(cluster):
    boot = cluster.bootstrap
    sent = await publish(boot, "news", "cli", 8)
    args = (
        "consume",
        "news",
        "--broadcast",
        "--group",
        "notifier",
        "--instance",
        "shell",
        "--from-beginning",
        "--timeout",
        "3",
    )
    code, out = await trio.to_thread.run_sync(cli, boot, *args)
    assert code == 0 and "committed for group notifier@shell" in out
    assert sorted(line.encode() for line in out.splitlines() if line.startswith("cli-")) == sorted(sent)
    code, again = await trio.to_thread.run_sync(cli, boot, *args)  # resumes: nothing new
    assert code == 0 and "consumed 0 message(s)" in again
    code, out = await trio.to_thread.run_sync(cli, boot, "consume", "news", "--instance", "x")
    assert code != 0 and "--broadcast" in out


def test_instance_ids_are_checked():
    with pytest.raises(InvalidConfigError):
        Consumer("127.0.0.1:1", topics=["t"], broadcast=True, group="g", instance_id="a@b")
    with pytest.raises(InvalidConfigError):
        Consumer("127.0.0.1:1", topics=["t"], instance_id="a")  # neither a group's static member nor broadcast
    assert Consumer("127.0.0.1:1", topics=["t"], group="g", instance_id="a").static_id == "a"  # (static member)
    import socket

    assert Consumer("127.0.0.1:1", topics=["t"], broadcast=True, group="g").group == f"g@{socket.gethostname()}"
    ephemeral = Consumer("127.0.0.1:1", topics=["t"], broadcast=True, offset_reset="earliest")
    assert ephemeral.group is None and ephemeral.offset_reset == "latest"
