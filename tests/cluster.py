"""Test helpers: a cluster of brokers inside the test's trio run, on loopback ports."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from client.connection import open_connection
from client.errors import TideMQError
from client.protocol import Metadata
from node.broker import Broker
from node.config import NodeConfig


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class LocalCluster:
    def __init__(self, nursery: trio.Nursery, base: Path, n: int, **overrides) -> None:
        self.nursery = nursery
        self.base = base
        self.peers = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(n))}
        self.overrides = overrides
        self.brokers: dict[int, Broker] = {}
        self._scopes: dict[int, trio.CancelScope] = {}

    @property
    def bootstrap(self) -> str:
        return ",".join(self.peers.values())

    def config(self, node: int) -> NodeConfig:
        return NodeConfig(node_id=node, listen=self.peers[node], data_dir=self.base / f"n{node}",
                          peers=dict(self.peers), fsync="never", tick_ms=20, **self.overrides)

    async def start(self, node: int) -> Broker:
        broker = Broker(self.config(node))

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            with trio.CancelScope() as scope:
                self._scopes[node] = scope
                await broker.run(task_status=task_status)

        await self.nursery.start(run)
        self.brokers[node] = broker
        return broker

    async def stop(self, node: int, graceful: bool = True) -> None:
        broker = self.brokers.pop(node)
        if graceful:
            await broker.shutdown()
        self._scopes.pop(node).cancel()
        if not graceful:
            for r in broker.replicas.values():
                r.storage.log.close()

    async def wait_controller(self, timeout: float = 10) -> int:
        with trio.fail_after(timeout):
            while True:
                for b in self.brokers.values():
                    if b.controller.ready_for_writes():
                        return b.id
                await trio.sleep(0.02)

    async def wait_leaders(self, topic: str, timeout: float = 10) -> dict[int, int]:
        """partition -> leader, once every partition has a writable leader."""
        with trio.fail_after(timeout):
            while True:
                leaders = {}
                for b in self.brokers.values():
                    for (t, p), part in b.partitions.items():
                        if t == topic and part.ready_for_writes():
                            leaders[p] = b.id
                meta = next(iter(self.brokers.values())).state.topics.get(topic)
                if meta is not None and len(leaders) == len(meta.replicas):
                    return leaders
                await trio.sleep(0.02)


@asynccontextmanager
async def local_cluster(tmp_path: Path, n: int = 3, **overrides):
    async with trio.open_nursery() as nursery:
        cluster = LocalCluster(nursery, tmp_path, n, **overrides)
        for node in cluster.peers:
            await cluster.start(node)
        await cluster.wait_controller()
        try:
            yield cluster
        finally:
            for node in list(cluster.brokers):
                await cluster.stop(node, graceful=False)
            nursery.cancel_scope.cancel()
