"""Quotas on a node process: a user held to a produce and a fetch byte rate gets it
to within 20% with no request failed, answers carry the throttle time, and `tidemq
quota set|list` set and show them."""

from __future__ import annotations

import pytest
import trio

from client import Admin, Consumer, Producer
from client.connection import open_connection
from client.protocol import AclBinding, Produce
from client.quotas import FETCH_RATE, PRODUCE_RATE
from segments import build_batch
from tests.cluster import process_cluster, tidemq_cli

pytestmark = pytest.mark.timeout(180)
TOKEN = "quota-token"
MIB = 1024 * 1024
VALUE = b"q" * 4096
COUNT = 1024  # 4 MiB of values


async def test_a_user_over_quota_is_slowed_to_it_and_never_failed(tmp_path):
    async with process_cluster(tmp_path, 1, token=TOKEN, args=("--require-users",)) as c:
        await c.wait_ready()
        async with Admin(c.bootstrap, token=TOKEN) as admin:
            await admin.add_user("slow", "pw-slow")
            await admin.create_topic("q", 1, 1)
        tidemq = tidemq_cli(TIDEMQ_BOOTSTRAP=c.bootstrap, TIDEMQ_TOKEN=TOKEN)

        done = tidemq("quota", "set", "User:slow", "--produce-rate", "1M", "--fetch-rate", "1M")
        assert done.returncode == 0, done.stderr
        assert "produce rate 1.04858e+06 bytes/s" in done.stdout
        listed = tidemq("quota", "list")
        assert "User:slow" in listed.stdout and "1.04858e+06" in listed.stdout
        async with Admin(c.bootstrap, token=TOKEN) as admin:
            assert (await admin.describe_quotas("User:slow"))["User:slow"] == {PRODUCE_RATE: MIB, FETCH_RATE: MIB}
        slow = {"username": "slow", "password": "pw-slow"}
        async with Admin(c.bootstrap, token=TOKEN) as admin:
            await admin.create_acls(
                [AclBinding("User:slow", "topic", "q", "all"), AclBinding("User:slow", "group", "*", "read")]
            )

        # Produce: 4 MiB in 64 KiB batches at 1 MiB/s.
        async with Producer(c.bootstrap, batch_bytes=64 * 1024, **slow) as producer:
            started = trio.current_time()
            deliveries = [await producer.submit("q", VALUE) for _ in range(COUNT)]
            await producer.flush()
            elapsed = trio.current_time() - started
        assert all(d.result().offset >= 0 for d in deliveries)  # (result() raises what failed)
        rate = COUNT * len(VALUE) / elapsed
        assert 0.8 * MIB <= rate <= 1.2 * MIB, f"produced {rate / MIB:.2f} MiB/s against a quota of 1"

        # Fetch: the same 4 MiB back, 64 KiB a fetch, at 1 MiB/s.
        got = 0
        async with Consumer(
            c.bootstrap, topics=["q"], offset_reset="earliest", fetch_max_bytes=64 * 1024, **slow
        ) as cons:
            started = trio.current_time()
            with trio.fail_after(30):
                while got < COUNT:
                    await cons.__anext__()
                    got += 1
            elapsed = trio.current_time() - started
        rate = COUNT * len(VALUE) / elapsed
        assert 0.8 * MIB <= rate <= 1.2 * MIB, f"fetched {rate / MIB:.2f} MiB/s against a quota of 1"

        # The answer says how long the node will wait before reading the next request.
        records = build_batch([(None, b"x" * (512 * 1024), [], None)])
        async with open_connection(c.peers[1], user="slow", password="pw-slow") as conn:
            await trio.sleep(0.5)  # a full bucket
            resp = await conn.request(Produce("q", 0, records))
        assert 200 <= resp.throttle_ms <= 400, resp.throttle_ms  # (512 KiB - a 0.2 s burst) at 1 MiB/s
