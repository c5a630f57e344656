"""One three-node process cluster for the hostile-input tests, and the check each test
ends with: every node still runs, and a canary produce and consume loses nothing."""

from __future__ import annotations

import itertools

import pytest
import trio

from client import Admin, Producer
from tests.cluster import ProcessCluster, read_all, running_cluster

_canary = itertools.count()


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("hostile"), 3, fsync="never") as c:
        yield c


async def assert_unharmed(c: ProcessCluster, messages: int = 20) -> None:
    """Every node is up, and a fresh topic takes and gives back every message once."""
    dead = [n for n in c.procs if not c.alive(n)]
    assert not dead, f"nodes {dead} exited; see {c.base}/n*.log"
    topic = f"canary-{next(_canary)}"
    with trio.fail_after(60):
        async with Admin(c.bootstrap) as admin:
            await admin.create_topic(topic, partitions=3, replication=3)
        async with Producer(c.bootstrap) as producer:
            for i in range(messages):
                await producer.send(topic, b"v%d" % i, key=b"k%d" % i)
        got = await read_all(c.bootstrap, [topic], quiet=1.0)
    assert sorted(m.value for m in got) == sorted(b"v%d" % i for i in range(messages))
    assert all(c.alive(n) for n in c.procs)
