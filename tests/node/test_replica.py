"""Replica: what is in the log is data; an entry that fails to apply is skipped on every
replica (and again on replay) instead of stopping the node."""

import trio

from client.cluster import ClusterClient
from client.protocol import CreateTopic
from node.broker import CONTROLLER_GROUP
from segments import build_batch
from segments.batch import HEADER_SIZE
from tests.cluster import local_cluster
from tests.segments.helpers import recrc


def _undecodable() -> bytes:
    b = bytearray(build_batch([(None, b"not a command" * 4, (), 1)]))
    b[HEADER_SIZE] = 0x7F          # a record length that cannot be
    return recrc(b)


async def test_an_entry_that_fails_to_apply_is_skipped_everywhere_and_on_replay(tmp_path):
    async with local_cluster(tmp_path, 3) as c:
        ctrl = await c.wait_controller()
        leader = c.brokers[ctrl].replicas[CONTROLLER_GROUP]
        waiter = leader.propose(_undecodable(), 1)     # as if it had been written before any check
        await leader.wait(waiter, 10)
        with trio.fail_after(10):
            while not all(b.replicas[CONTROLLER_GROUP].apply_errors == 1 for b in c.brokers.values()):
                await trio.sleep(0.02)
        async with ClusterClient(c.bootstrap) as client:
            await client.controller_request(CreateTopic("after", 1, 3))   # the controller goes on
        other = next(n for n in c.brokers if n != ctrl)
        await c.stop(other, graceful=False)
        restarted = await c.start(other)                   # replays the bad entry from its log
        with trio.fail_after(20):
            while "after" not in restarted.state.topics or restarted.replicas[CONTROLLER_GROUP].apply_errors < 1:
                await trio.sleep(0.05)
