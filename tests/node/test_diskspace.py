"""A full data disk: produce gets a retriable STORAGE_ERROR, reads and everything else
go on, and writes resume once there is room again."""

import trio

from client.cluster import ClusterClient
from client.errors import StorageError
from client.protocol import CreateTopic, Fetch, FetchPartition, Produce
from segments import build_batch
from tests.cluster import local_cluster


def batch(value: bytes) -> bytes:
    return build_batch([(None, value, (), None)])


async def test_a_full_disk_refuses_produce_with_a_retriable_error_and_reads_go_on(tmp_path):
    async with local_cluster(tmp_path) as c:
        async with ClusterClient(c.bootstrap) as client:
            await client.controller_request(CreateTopic("full", 1, 3))
            leader = (await c.wait_leaders("full"))[0]
            await client.leader_request("full", 0, Produce("full", 0, batch(b"before")))
            disk = c.brokers[leader].disk
            real = disk.free_bytes
            disk.free_bytes = lambda: 10 << 20  # 10 MiB left, below the 64 MiB kept free
            try:
                err = None
                try:
                    await client.request(c.peers[leader], Produce("full", 0, batch(b"refused")))
                except StorageError as exc:
                    err = exc
                assert err is not None and err.retriable and "MiB free" in err.message
                resp = await client.leader_request("full", 0, Fetch([FetchPartition("full", 0, 0)], max_wait_ms=0))
                assert resp.results[0].records and not resp.results[0].error
            finally:
                disk.free_bytes = real
            with trio.fail_after(10):
                await client.leader_request("full", 0, Produce("full", 0, batch(b"after")))
        assert all(not b.shutting_down for b in c.brokers.values())


def test_free_space_is_read_from_the_filesystem(tmp_path):
    import pytest

    from node.diskspace import DiskSpace

    assert DiskSpace(str(tmp_path), 0).free_bytes() > 0
    with pytest.raises(StorageError):
        DiskSpace(str(tmp_path), 1 << 62).check(1)
