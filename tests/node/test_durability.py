"""Real node processes: SIGKILL the leader mid-stream, SIGTERM hands leadership over,
and no acknowledged write is lost, duplicated or reordered."""

import signal

import trio

from client.errors import TideMQError
from client.protocol import CreateTopic, Fetch, FetchPartition, InitProducerId, Produce
from scripts.chaoslib.cluster import partition_path
from segments import Log, LogConfig, build_batch, decode_records, iter_batches
from tests.cluster import process_cluster


async def produce_until_acked(c, topic, record, pid, seq, leader_hint):
    """Retry one idempotent batch until some leader acknowledges it."""
    data = build_batch([(None, record, (), None)], producer_id=pid, producer_epoch=0, base_sequence=seq)
    leader = leader_hint
    with trio.fail_after(30):
        while True:
            try:
                resp = await c.request(leader, Produce(topic, 0, data, timeout_ms=3000), timeout=5)
                return resp, leader
            except (TideMQError, OSError, trio.TooSlowError):
                await trio.sleep(0.05)
                leader = await c.leader_of(topic, 0)


async def read_all(c, topic, leader):
    values, offset, hw = [], 0, None
    with trio.fail_after(20):
        while hw is None or offset < hw:
            res = (await c.request(leader, Fetch([FetchPartition(topic, 0, offset)], max_wait_ms=100))).results[0]
            assert res.error == 0, res.error_message
            hw = res.high_watermark
            for header, data in iter_batches(res.records):
                offset = header.last_offset + 1
                if not header.is_control:
                    values += [r.value for r in decode_records(data)]
    return values, hw


async def test_sigkill_leader_loses_nothing_acknowledged(tmp_path):
    async with process_cluster(tmp_path) as c:
        ctrl = await c.wait_ready()
        await c.request(ctrl, CreateTopic("d", partitions=1, replication=3))
        leader = await c.leader_of("d", 0)
        pid = (await c.request(ctrl, InitProducerId())).producer_id
        acked, dups = [], 0
        killed = None
        for seq in range(120):
            value = b"v%03d" % seq
            resp, leader = await produce_until_acked(c, "d", value, pid, seq, leader)
            dups += resp.duplicate
            acked.append(value)
            if seq == 60:
                killed = leader
                c.kill(killed, signal.SIGKILL)
                await c.wait_exit(killed)
        c.start(killed)
        await c.wait_ready()
        leader = await c.leader_of("d", 0)
        values, hw = await read_all(c, "d", leader)
        assert values == acked, "every acknowledged record once, in order"

        # Graceful stop of the leader hands the partition to a follower.
        c.kill(leader, signal.SIGTERM)
        assert await c.wait_exit(leader) == 0
        new_leader = await c.leader_of("d", 0, timeout=5)
        assert new_leader != leader
        c.start(leader)
        await c.wait_ready()
        for n in c.peers:
            c.kill(n, signal.SIGTERM)
            assert await c.wait_exit(n) == 0

    # Every replica holds the same committed bytes.
    logs = []
    for n in (1, 2, 3):
        log = Log.open(str(partition_path(tmp_path / f"n{n}", "d", 0)), LogConfig(fsync="never"))
        logs.append(log.read(0, 1 << 30, max_offset=hw))
        log.close()
    assert logs[0] == logs[1] == logs[2] and logs[0]
