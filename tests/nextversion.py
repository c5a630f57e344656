"""The next version of the protocol, defined in test code only: what a build after this
one would change in `client/protocol.py` and `node/api.py`, installed by patching before
anything else imports them, so a node and a client of "the next build" can run beside
this one's (tests/node/test_versions_process.py).

    python -m tests.nextversion node --id 3 ...     a node of the next version (node's flags)
    python -m tests.nextversion client JSON          a client of the next version does its
                                                     work (JSON: what to do) and prints JSON

What the next version changes, by the rule in docs/architecture.md:
- `MetadataResponse` appends `served_by` (the node that answered) at the version after
  this build's newest (NEXT), so `Metadata` speaks 1..NEXT;
- `Echo` is a request this build does not have at all (1..1 in the next one).
"""

from __future__ import annotations

import functools
import json
import operator
import sys
from typing import ClassVar, get_args

import msgspec
import trio

import client.protocol as protocol

# The client package is loaded with the protocol (client/__init__.py), so it holds this
# build's classes by name; the next version only subclasses them, which they accept. The
# node must not be loaded yet: its handlers build responses from the patched classes.
assert "node.api" not in sys.modules, "install the next version before the node loads"


THIS = protocol.CLIENT_VERSIONS["Metadata"][1]  # this build's newest Metadata
NEXT = THIS + 1


class MetadataResponse(protocol.MetadataResponse):
    served_by: int = -1
    added: ClassVar[dict[str, int]] = {**protocol.MetadataResponse.added, "served_by": NEXT}


class Echo(protocol.Request["EchoResponse"]):
    text: str


class EchoResponse(protocol.WireMessage):
    text: str
    node_id: int


def install() -> None:
    """Make `client.protocol` the next version's (only once, before anything imports it)."""
    p = protocol
    if p.MetadataResponse is MetadataResponse:
        return
    body = tuple(MetadataResponse if c is p.MetadataResponse else c for c in get_args(p.Body)) + (Echo, EchoResponse)
    p.check_evolution(body)
    p.MetadataResponse = MetadataResponse  # type: ignore[misc]
    p.Body = functools.reduce(operator.or_, body)  # type: ignore[misc,assignment]
    p.Envelope = msgspec.defstruct("Envelope", [("id", int), ("body", p.Body)], array_like=True)  # type: ignore[misc]
    p._decoder = p.EnvelopeDecoder(p.Envelope)
    p.CLIENT_VERSIONS["Metadata"] = (1, NEXT)
    p.CLIENT_VERSIONS["Echo"] = (1, 1)


def run_node(argv: list[str]) -> None:
    install()
    from node.__main__ import main
    from node.api import Api

    serve = Api.dispatch

    async def stamped(pending, node_id: int):
        resp = await pending
        assert isinstance(resp, MetadataResponse)
        resp.served_by = node_id
        return resp

    async def echo(body: Echo, node_id: int) -> EchoResponse:
        return EchoResponse(body.text, node_id)

    def dispatch(self, body, client):
        if isinstance(body, Echo):
            return echo(body, self.node.id)
        pending = serve(self, body, client)
        return stamped(pending, self.node.id) if isinstance(body, protocol.Metadata) else pending

    Api.dispatch = dispatch  # type: ignore[method-assign]
    main(argv)


async def client_work(job: dict) -> dict:
    """Per node: the versions its connection agreed, what Metadata and Echo got; then
    produce `job["send"]` messages and read the topic back in group `job["group"]`."""
    from client import Consumer, Producer
    from client.connection import open_connection
    from client.errors import UnsupportedVersionError

    out: dict = {"nodes": {}}
    for node, addr in job["nodes"].items():
        seen: dict = {}
        async with open_connection(addr) as conn:
            md = await conn.request(protocol.Metadata(topics=[]))
            seen["metadata_version"] = conn.versions.get("Metadata")
            seen["served_by"] = md.served_by
            try:
                seen["echo"] = (await conn.request(Echo("hi"))).node_id
            except UnsupportedVersionError as exc:
                seen["echo"] = f"refused: {exc}"
            # the refusal left the connection as it was
            seen["after"] = (await conn.request(protocol.Metadata(topics=[]))).controller is not None
        out["nodes"][node] = seen
    async with Producer(job["bootstrap"], client_id="next-producer") as producer:
        for i in range(job["send"]):
            await producer.send(job["topic"], b"new-%d" % i, key=b"k%d" % i)
    got: set[str] = set()
    with trio.fail_after(30):
        async with Consumer(
            job["bootstrap"], group=job["group"], topics=[job["topic"]], offset_reset="earliest"
        ) as consumer:
            async for message in consumer:
                got.add(message.value.decode())
                if len(got) >= job["expect"]:
                    await consumer.commit()
                    break
    out["read"] = sorted(got)
    return out


if __name__ == "__main__":
    if sys.argv[1] == "node":
        run_node(sys.argv[2:])
    elif sys.argv[1] == "client":
        install()
        print(json.dumps(trio.run(client_work, json.loads(sys.argv[2]))))
    else:
        raise SystemExit(__doc__)
