"""client.sync against live node processes: the blocking faces do what the async ones do,
surface the errors as they are, and leave no thread behind.

The brokers are separate processes (tests.cluster.running_cluster), so a blocking call on
the test's thread can never stall them; each facade runs its own trio loop on its own
thread, as in a real script.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from client import sync
from client.errors import TopicExistsError, UnknownError, UnknownTopicError
from client.partitioner import partition_for_key
from client.sync import _Blocking
from tests.cluster import running_cluster

pytestmark = pytest.mark.timeout(60)  # a facade that hangs must fail, not stall the run


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory) -> str:
    with running_cluster(tmp_path_factory.mktemp("sync"), n=1, fsync="never") as cluster:
        yield cluster.bootstrap


def drain(consumer: sync.Consumer, idle: float = 1.0) -> list:
    got = []
    while (msg := consumer.poll(idle)) is not None:
        got.append(msg)
    return got


def test_admin_manages_topics(bootstrap):
    with sync.Admin(bootstrap) as admin:
        info = admin.create_topic("adm", partitions=3, configs={"retention.ms": 60_000})
        assert info is not None and all(p.leader is not None for p in info.partitions)
        assert "adm" in admin.list_topics()
        described = admin.describe_topic("adm")
        assert len(described.partitions) == 3 and described.configs == {"retention.ms": "60000"}
        assert admin.describe_cluster().controller == 1
        with pytest.raises(TopicExistsError):
            admin.create_topic("adm")
        admin.delete_topic("adm")
        assert "adm" not in admin.list_topics()
        with pytest.raises(UnknownTopicError):
            admin.describe_topic("adm")


def test_send_then_consume_everything_back(bootstrap):
    with sync.Admin(bootstrap) as admin:
        admin.create_topic("rt", partitions=2)
    sent = []
    with sync.Producer(bootstrap) as producer:
        for i in range(10):
            key = b"k%d" % (i % 3)
            meta = producer.send("rt", b"v%d" % i, key=key, headers={"n": b"%d" % i})
            assert meta.topic == "rt" and meta.partition == partition_for_key(key, 2)
            sent.append((meta.partition, meta.offset, key, b"v%d" % i))
        producer.flush()
    with sync.Consumer(bootstrap, topics=["rt"], offset_reset="earliest") as consumer:
        assert consumer.assignment == {("rt", 0), ("rt", 1)}
        first = next(iter(consumer))
        got = [first] + drain(consumer)
        assert consumer.poll(0.05) is None
    assert sorted((m.partition, m.offset, m.key, m.value) for m in got) == sorted(sent)
    assert all(m.headers == (("n", m.value[1:]),) for m in got)


def test_submit_returns_once_queued_and_keeps_the_order(bootstrap):
    with sync.Admin(bootstrap) as admin:
        admin.create_topic("sub", partitions=2)
    with sync.Producer(bootstrap) as producer:
        futures = [producer.submit("sub", b"%d" % i, key=b"one-key") for i in range(200)]
        metas = [f.result(timeout=30) for f in futures]
    offsets = [m.offset for m in metas]
    assert {m.partition for m in metas} == {partition_for_key(b"one-key", 2)}
    assert offsets == sorted(offsets) and len(set(offsets)) == 200


def test_sends_from_many_threads_keep_each_threads_order(bootstrap):
    with sync.Admin(bootstrap) as admin:
        admin.create_topic("mt", partitions=4)

    def sender(producer: sync.Producer, n: int) -> None:
        for i in range(25):
            producer.send("mt", b"%d" % i, key=b"thread-%d" % n)

    with sync.Producer(bootstrap) as producer, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: sender(producer, n), range(4)))
    with sync.Consumer(bootstrap, topics=["mt"], offset_reset="earliest") as consumer:
        got = drain(consumer)
    for n in range(4):
        assert [int(m.value) for m in got if m.key == b"thread-%d" % n] == list(range(25))


def test_a_group_resumes_after_what_it_committed(bootstrap):
    with sync.Admin(bootstrap) as admin:
        admin.create_topic("grp", partitions=2)
    with sync.Producer(bootstrap) as producer:
        for i in range(6):
            producer.send("grp", b"%d" % i, key=b"%d" % i)
    with sync.Consumer(bootstrap, group="g", topics=["grp"], offset_reset="earliest") as consumer:
        first = [next(consumer) for _ in range(4)]
        consumer.commit()
    with sync.Consumer(bootstrap, group="g", topics=["grp"], offset_reset="earliest") as consumer:
        rest = drain(consumer, idle=2.0)
    assert sorted(m.value for m in first + rest) == [b"%d" % i for i in range(6)]


def portal_threads() -> set[threading.Thread]:
    """The event loop threads of blocking facades (anyio names them "<backend>-portal-<id>")."""
    return {t for t in threading.enumerate() if "-portal-" in t.name}


def test_errors_arrive_unchanged_and_leave_no_thread(bootstrap):
    before = portal_threads()
    with pytest.raises(UnknownTopicError):
        sync.Consumer(bootstrap, topics=["missing"])
    with pytest.raises(ValueError, match="from the block"):
        with sync.Producer(bootstrap) as producer:
            raise ValueError("from the block")
    with pytest.raises(RuntimeError, match="closed"):
        producer.flush()
    admin = sync.Admin(bootstrap)
    admin.close()
    admin.close()
    assert portal_threads() == before


def test_a_dead_client_fails_a_blocked_call_instead_of_hanging():
    class DiesSoon:
        """An async client whose background task fails while a call waits forever."""

        async def __aenter__(self):
            self.tg = anyio.create_task_group()
            await self.tg.__aenter__()
            self.tg.start_soon(self.fail_later)
            return self

        async def fail_later(self):
            await anyio.sleep(0.1)
            raise UnknownError("the background task broke")

        async def __aexit__(self, *exc):
            return await self.tg.__aexit__(*exc)

    blocking = _Blocking(DiesSoon)
    started = time.monotonic()
    with pytest.raises(BaseExceptionGroup) as info:
        blocking._call(anyio.sleep_forever)
    assert info.group_contains(UnknownError) and time.monotonic() - started < 5
    with pytest.raises(BaseExceptionGroup):
        blocking.close()


async def test_refused_on_an_event_loop_thread():
    with pytest.raises(RuntimeError, match="event loop"):
        sync.Admin("127.0.0.1:1")


def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets, asked of its coordinator directly."""
    from client.cluster import ClusterClient
    from client.protocol import OffsetFetch

    async def fetch():
        async with ClusterClient(bootstrap) as client:
            resp = await client.coordinator_request(group, OffsetFetch(group))
            return {(t, p): o for t, p, o in resp.offsets}

    return anyio.run(fetch, backend="trio")


def test_transactions_commit_abort_and_the_with_block(bootstrap):
    with sync.Admin(bootstrap) as admin:
        admin.create_topic("txa", partitions=2)
        admin.create_topic("txb")
    with sync.Producer(bootstrap, transactional_id="sync-txn") as producer:
        assert producer.transactional_id == "sync-txn"
        with producer.transaction() as same:
            assert same is producer
            for i in range(4):
                producer.submit("txa", b"a%d" % i, key=b"%d" % i)
            producer.send("txb", b"b0")
        producer.begin_transaction()
        producer.send("txa", b"aborted", key=b"0")
        producer.abort()
        with pytest.raises(KeyError, match="the body failed"), producer.transaction():
            producer.send("txb", b"also aborted")
            raise KeyError("the body failed")
        producer.begin_transaction()
        producer.send("txb", b"b1")
        producer.commit_transaction()
        with pytest.raises(RuntimeError, match="no transaction is open"):
            producer.commit_transaction()
    with sync.Admin(bootstrap) as admin:
        info = admin.describe_transaction("sync-txn")
        assert info.state == "complete_commit" and "sync-txn" in {t.transactional_id for t in admin.list_transactions()}
    with sync.Consumer(bootstrap, topics=["txa", "txb"], offset_reset="earliest") as consumer:
        committed = sorted(m.value for m in drain(consumer))
    assert committed == [b"a0", b"a1", b"a2", b"a3", b"b0", b"b1"]
    with sync.Consumer(
        bootstrap, topics=["txa", "txb"], offset_reset="earliest", isolation="read_uncommitted"
    ) as consumer:
        everything = sorted(m.value for m in drain(consumer))
    assert everything == sorted(committed + [b"aborted", b"also aborted"])


def test_send_offsets_commit_only_with_the_transaction(bootstrap):
    with sync.Admin(bootstrap) as admin:
        admin.create_topic("txin")
        admin.create_topic("txout")
    with sync.Producer(bootstrap) as plain:
        for i in range(4):
            plain.send("txin", b"%d" % i)
    with (
        sync.Consumer(bootstrap, group="sync-pipe", topics=["txin"], offset_reset="earliest") as consumer,
        sync.Producer(bootstrap, transactional_id="sync-pipe-1") as producer,
    ):
        first = [next(consumer) for _ in range(2)]
        with producer.transaction():
            for m in first:
                producer.send("txout", m.value + b"!")
            producer.send_offsets(consumer)
        assert committed_offsets(bootstrap, "sync-pipe") == {("txin", 0): first[-1].offset + 1}
        third = next(consumer)
        producer.begin_transaction()
        producer.send("txout", third.value + b"!")
        producer.send_offsets(consumer)
        producer.abort()
        assert committed_offsets(bootstrap, "sync-pipe") == {("txin", 0): first[-1].offset + 1}
    with sync.Consumer(bootstrap, topics=["txout"], offset_reset="earliest") as reader:
        assert [m.value for m in drain(reader)] == [b"0!", b"1!"]


def test_half_messages_with_a_plain_function_checker(bootstrap):
    """The blocking face: send_half, commit and abort block; a plain-function checker
    runs in a worker thread and decides what nobody committed."""
    import time

    with sync.Admin(bootstrap) as admin:
        admin.create_topic("sync-half", partitions=1)
    with sync.Producer(bootstrap, producer_group="sync-svc", check_after=0.3) as producer:
        kept = producer.send_half("sync-half", b"kept", key=b"a")
        dropped = producer.send_half("sync-half", b"dropped", key=b"b")
        assert kept.commit().topic == "sync-half"
        dropped.abort()
        producer.send_half("sync-half", b"left", key=b"c")  # nobody decides it here
    asked = []

    def check(msg):  # blocking, like a DB query
        asked.append(msg.key)
        return msg.key == b"c"

    with (
        sync.Producer(bootstrap, producer_group="sync-svc", transaction_checker=check) as producer,
        sync.Admin(bootstrap) as admin,
    ):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = {h.key: h.state for h in admin.list_halves("sync-svc", resolved=True).halves}
            if states.get(b"c") == "committed":
                break
            time.sleep(0.2)
    assert asked == [b"c"] and states == {b"a": "committed", b"b": "aborted", b"c": "committed"}
    with sync.Consumer(bootstrap, topics=["sync-half"], offset_reset="earliest") as consumer:
        assert [m.value for m in drain(consumer)] == [b"kept", b"left"]
