"""Half messages with check-back against an in-process three-node cluster: commit,
abort, check-back answering commit / abort / unknown, the max-checks abort, a pending
half never holding back its topic, and the coordinator failing over mid-commit."""

import pytest
import trio

from client import Admin, Producer
from client.conventions import HALF_TOPIC
from client.errors import InvalidConfigError, InvalidRequestError
from tests.cluster import local_cluster, read_all


def cluster(tmp_path):
    return local_cluster(tmp_path, 3, offsets_partitions=1, txn_partitions=1, half_partitions=2)


async def topic(c, name="orders", partitions=2):
    async with Admin(c.bootstrap) as admin:
        await admin.create_topic(name, partitions=partitions, replication=3)
    await c.wait_leaders(HALF_TOPIC)


async def read(c, name, quiet=1.5, timeout=30, isolation="read_committed"):
    return await read_all(c.bootstrap, [name], isolation=isolation, quiet=quiet, timeout=timeout)


async def halves(c, group=None):
    async with Admin(c.bootstrap) as admin:
        survey = await admin.list_halves(group, resolved=True)
    return {(h.partition, h.offset): h for h in survey.halves}


async def wait_for(predicate, timeout=20):
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.1)


async def test_commit_makes_it_visible_once_and_abort_never(tmp_path):
    async with cluster(tmp_path) as c:
        await topic(c)
        with trio.fail_after(60):
            async with Producer(c.bootstrap, producer_group="orders-svc") as p:
                kept = await p.send_half("orders", b"order-7", key=b"o7", headers={"h": b"v"})
                dropped = await p.send_half("orders", b"order-8", key=b"o8")
                assert await read(c, "orders", quiet=0.5, isolation="read_uncommitted") == []
                where = await kept.commit()
                assert where.topic == "orders" and where.offset >= 0
                assert await kept.commit() == where  # repeating the decision is fine
                await dropped.abort()
                with pytest.raises(InvalidRequestError, match="already committed"):
                    await kept.abort()
                with pytest.raises(InvalidRequestError, match="already aborted"):
                    await p.commit_half(dropped.id)
            msgs = await read(c, "orders")
            assert [(m.key, m.value, m.headers, m.partition, m.offset) for m in msgs] == [
                (b"o7", b"order-7", (("h", b"v"),), where.partition, where.offset)
            ]
            states = {h.offset: (h.state, h.reason) for h in (await halves(c)).values()}
            assert states == {
                kept.offset: ("committed", "committed by the producer"),
                dropped.offset: ("aborted", "aborted by the producer"),
            }


async def test_bad_use_is_refused_clearly(tmp_path):
    async with cluster(tmp_path) as c:
        await topic(c)
        with trio.fail_after(30):
            with pytest.raises(InvalidConfigError, match="producer_group"):
                Producer(c.bootstrap, transaction_checker=lambda m: None)
            async with Producer(c.bootstrap) as p:
                with pytest.raises(InvalidConfigError, match="producer group"):
                    await p.send_half("orders", b"x")
                with pytest.raises(InvalidRequestError, match="only half messages"):
                    await p.send(HALF_TOPIC, b"sneaky", partition=0)
            async with Producer(c.bootstrap, producer_group="g") as p:
                with pytest.raises(InvalidRequestError, match="no half message"):
                    await p.commit_half("0:999")


async def test_a_pending_half_does_not_hold_back_its_topic(tmp_path):
    async with cluster(tmp_path) as c:
        await topic(c, partitions=1)
        with trio.fail_after(60):
            async with Producer(c.bootstrap, producer_group="g", check_after=60) as p:
                half = await p.send_half("orders", b"later")
                await p.send("orders", b"now")
                assert [m.value for m in await read(c, "orders", quiet=0.5)] == [b"now"]
                await half.commit()
            assert [m.value for m in await read(c, "orders")] == [b"now", b"later"]


async def test_check_back_asks_a_live_producer_of_the_group(tmp_path):
    async with cluster(tmp_path) as c:
        await topic(c)
        asked = []

        async def check(msg):
            asked.append((msg.key, msg.check))
            return {b"yes": True, b"no": False}.get(msg.key)  # None: ask again later

        with trio.fail_after(90):
            # The first producer "dies" without deciding anything.
            async with Producer(c.bootstrap, producer_group="svc", check_after=0.3, max_checks=3) as p:
                for key in (b"yes", b"no", b"unsure"):
                    await p.send_half("orders", key, key=key)
            async with Producer(c.bootstrap, producer_group="svc", transaction_checker=check):

                async def decided():
                    return (
                        len([h for h in (await halves(c, "svc")).values() if h.state in ("committed", "aborted")]) == 3
                    )

                await wait_for(decided, timeout=60)
            final = {h.key: h for h in (await halves(c, "svc")).values()}
            assert final[b"yes"].state == "committed"
            assert final[b"no"].state == "aborted" and "checker answered abort" in final[b"no"].reason
            assert final[b"unsure"].state == "aborted" and "kept answering 'unknown'" in final[b"unsure"].reason
            assert final[b"unsure"].checks == 3
            assert [(k, n) for k, n in asked if k == b"unsure"] == [(b"unsure", 1), (b"unsure", 2), (b"unsure", 3)]
            assert [m.value for m in await read(c, "orders")] == [b"yes"]


async def test_max_checks_abort_says_no_producer_was_polling(tmp_path):
    async with cluster(tmp_path) as c:
        await topic(c)
        with trio.fail_after(60):
            async with Producer(c.bootstrap, producer_group="gone", check_after=0.2, max_checks=2) as p:
                await p.send_half("orders", b"orphan")

            async def aborted():
                return any(h.state == "aborted" for h in (await halves(c, "gone")).values())

            await wait_for(aborted, timeout=30)
            (h,) = (await halves(c, "gone")).values()
            assert h.checks == 2 and "no live producer of group 'gone'" in h.reason


async def test_commits_survive_the_coordinator_failing_over(tmp_path):
    async with cluster(tmp_path) as c:
        await topic(c, partitions=3)
        with trio.fail_after(120):
            async with Producer(c.bootstrap, producer_group="fo", check_after=300) as p:
                sent = [await p.send_half("orders", b"m%d" % i, key=b"k%d" % i) for i in range(40)]
                leader = (await c.wait_leaders(HALF_TOPIC))[sent[0].partition]

                async def commit_all():
                    async with trio.open_nursery() as n:
                        for h in sent:
                            n.start_soon(h.commit)

                part = c.brokers[leader].partitions[(HALF_TOPIC, sent[0].partition)]
                async with trio.open_nursery() as n:
                    n.start_soon(commit_all)
                    while not part.shard.to_write:  # kill it with commits decided but not yet copied
                        await trio.sleep(0.001)
                    await c.stop(leader, graceful=False)
                await c.start(leader)
                for h in sent:  # every answer is final and the same
                    assert (await h.commit()).topic == "orders"
            values = sorted(m.value for m in await read(c, "orders"))
            assert values == sorted(b"m%d" % i for i in range(40))


async def test_a_group_holds_at_most_so_many_pending_halves(tmp_path, monkeypatch):
    import node.half
    from client.errors import LimitExceededError

    monkeypatch.setattr(node.half, "MAX_PENDING_PER_GROUP", 2)
    async with cluster(tmp_path) as c:
        await topic(c)
        with trio.fail_after(60):
            async with Producer(c.bootstrap, producer_group="capped") as p:
                first = await p.send_half("orders", b"1")
                await p.send_half("orders", b"2")
                with pytest.raises(LimitExceededError, match="pending"):
                    await p.send_half("orders", b"3")
                await first.abort()  # room again once one is decided
                await p.send_half("orders", b"4")
