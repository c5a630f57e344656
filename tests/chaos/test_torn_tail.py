"""The torn-tail fault on its own: a follower killed, its active segment's tail cut, and
restarted, must repair its log and catch up again from the leader.

Found by the chaos run (seed 35): the restarted follower's log ended before what the
leader remembered as its match. The follower raised on the heartbeat's commit index
(now clamped to its own log), the error cut the peer link for every group (now caught
per group), and the leader ignored the follower's rejections as stale (now a rejection
whose hint lies below the match lowers the match and probes from there).
"""

import signal

import trio

from client.errors import TideMQError
from client.protocol import CreateTopic, Metadata, Produce
from scripts.chaoslib.cluster import partition_path
from scripts.chaoslib.nemesis import tear_tails
from segments import Log, LogConfig, build_batch
from tests.cluster import process_cluster


async def produce(c, value: bytes) -> int:
    """Write one record wherever the leader is now; returns that leader."""
    with trio.fail_after(30):
        while True:
            leader = await c.leader_of("torn", 0)
            try:
                await c.request(leader, Produce("torn", 0, build_batch([(None, value, (), None)]), timeout_ms=3000))
                return leader
            except (TideMQError, OSError, trio.TooSlowError):
                await trio.sleep(0.1)


async def test_a_follower_with_a_torn_tail_catches_up(tmp_path):
    async with process_cluster(tmp_path, fsync="always") as c:
        ctrl = await c.wait_ready()
        await c.request(ctrl, CreateTopic("torn", partitions=1, replication=3))
        for i in range(30):
            leader = await produce(c, b"value-%02d" % i)
        follower = next(n for n in c.peers if n != leader)
        await trio.sleep(0.5)  # the follower has it all and has acknowledged it
        c.kill(follower, signal.SIGKILL)
        await c.wait_exit(follower)
        torn = tear_tails(tmp_path / f"n{follower}", [{"pick": 0.99, "mode": "cut", "bytes": 150, "salt": 1}])
        assert torn[0]["dir"].startswith("torn-0.g") and torn[0]["bytes"] == 150
        c.start(follower)
        await c.wait_ready()
        for i in range(30, 40):  # and the partition keeps taking writes
            await produce(c, b"value-%02d" % i)
        in_sync: list[int] = []
        with trio.move_on_after(10):
            while follower not in in_sync:  # as its leader (whoever that is by now) sees it
                await trio.sleep(0.2)
                leader = await c.leader_of("torn", 0)
                in_sync = (await c.request(leader, Metadata(["torn"]))).topics[0].partitions[0].in_sync
        log = (tmp_path / f"n{follower}.log").read_text(errors="replace")
        assert "RaftInvariantError" not in log
        assert follower in in_sync, f"n{follower} never caught up after its torn tail was repaired"


async def test_an_idle_follower_with_a_torn_tail_is_repaired(tmp_path):
    """The same tear on a partition that takes no more writes (found by the chaos run on
    the idle `__delay_10m-2`, seed 184). An idle group sends no appends, so the follower's
    heartbeat answer says where its log really ends (`lost_tail`) and the leader lowers
    its match and re-sends."""
    async with process_cluster(tmp_path, fsync="always") as c:
        ctrl = await c.wait_ready()
        await c.request(ctrl, CreateTopic("torn", partitions=1, replication=3))
        for i in range(3):
            leader = await produce(c, b"value-%02d" % i)
        follower = next(n for n in c.peers if n != leader)
        await trio.sleep(0.5)
        c.kill(follower, signal.SIGKILL)
        await c.wait_exit(follower)
        tear_tails(tmp_path / f"n{follower}", [{"pick": 0.99, "mode": "cut", "bytes": 1000, "salt": 1}])
        c.start(follower)
        await c.wait_ready()
        await trio.sleep(5)  # dozens of heartbeats, no write
        leader = await c.leader_of("torn", 0)
        hw = (await c.request(leader, Metadata(["torn"]))).topics[0].partitions[0].high_watermark
        c.kill(follower, signal.SIGTERM)
        assert await c.wait_exit(follower) == 0
        log = Log.open(str(partition_path(tmp_path / f"n{follower}", "torn", 0)), LogConfig(fsync="never"))
        try:
            end = log.next_offset
        finally:
            log.close()
        assert end >= hw, f"n{follower} holds offsets below {end}, the partition's high watermark is {hw}"
