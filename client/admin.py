"""Admin: create, delete, list and describe topics; look at the cluster.

Admin requests go to the controller leader (followed invisibly). `create_topic` returns
once every partition has an elected leader, so a producer can use the topic at once.
"""

from __future__ import annotations

import anyio

from client.cluster import ClusterClient
from client.protocol import CreateTopic, DeleteTopic, MetadataResponse, TopicInfo


class Admin:
    def __init__(self, bootstrap: str | list[str] | None = None, *, token: str | None = None,
                 request_timeout: float = 30.0, client_id: str = "tidemq-admin") -> None:
        self.cluster = ClusterClient(bootstrap, token=token, client_id=client_id, request_timeout=request_timeout)
        self.request_timeout = request_timeout

    async def __aenter__(self) -> "Admin":
        await self.cluster.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.cluster.__aexit__(*exc)

    async def create_topic(self, name: str, partitions: int = 1, replication: int = 1,
                           configs: dict[str, str | int] | None = None, *, wait: bool = True) -> TopicInfo | None:
        """Create a topic; with `wait`, return its description once every partition has a leader."""
        body = CreateTopic(name, partitions, replication, {k: str(v) for k, v in (configs or {}).items()})
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(body)
            if not wait:
                return None
            return await self.wait_for_leaders(name)

    async def wait_for_leaders(self, name: str) -> TopicInfo:
        while True:
            info = await self.cluster.topic(name, refresh=True)
            if all(p.leader is not None for p in info.partitions):
                return info
            await anyio.sleep(0.05)

    async def delete_topic(self, name: str) -> None:
        with anyio.fail_after(self.request_timeout):
            await self.cluster.controller_request(DeleteTopic(name))

    async def list_topics(self, internal: bool = False) -> list[str]:
        md = await self.cluster.refresh_metadata()
        return sorted(t.name for t in md.topics if internal or not t.internal)

    async def describe_topic(self, name: str) -> TopicInfo:
        return await self.cluster.topic(name, refresh=True)

    async def describe_cluster(self) -> MetadataResponse:
        return await self.cluster.refresh_metadata()
