"""TLS for a node's listeners and its links to other nodes (`--tls-cert`, `--tls-key`,
`--tls-ca`).

With a certificate and key, the client listener and the Kafka listener speak TLS only
(1.2 and up); a client certificate, where the CA is given, is asked for but optional
(it will stand for a user). With the CA too, the peer links are mutual TLS: each node
presents its certificate, which names its node id (`tidemq://node/N` in its subject
alternative names, as scripts/certs.py issues them), and a node takes a peer only if
that certificate names the node the peer says it is, both ways: a stolen certificate of
node 2 does not make its holder node 3. The peer secret's proof goes on inside, as
before.
"""

from __future__ import annotations

import ssl
from typing import Any, NamedTuple

import trio

NODE_URI_PREFIX = "tidemq://node/"
HANDSHAKE_TIMEOUT_S = 10.0


class NodeTLS(NamedTuple):
    """A node's TLS contexts (None: plain TCP there)."""

    clients: ssl.SSLContext | None  # the client and Kafka listeners
    peer_listener: ssl.SSLContext | None  # mutual: a peer's certificate is required
    peer_links: ssl.SSLContext | None  # this node's own connections to peer listeners

    @classmethod
    def of(cls, cert: str | None, key: str | None, ca: str | None) -> NodeTLS:
        if cert is None or key is None:
            return cls(None, None, None)
        clients = server_context(cert, key, ca, require_client_cert=False)
        if ca is None:
            return cls(clients, None, None)
        return cls(clients, server_context(cert, key, ca, require_client_cert=True), client_context(ca, cert, key))


def server_context(cert: str, key: str, ca: str | None, *, require_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca is not None:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: str | None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """For a node's own links (and, in client/tls.py's image, for clients): the server's
    certificate must chain to `ca` (the system's CAs if None) and name the host."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def node_id_of(cert: dict[str, Any] | None) -> int | None:
    """The node a peer's certificate names (None: none, or not one of ours)."""
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind == "URI" and isinstance(value, str) and value.startswith(NODE_URI_PREFIX):
            tail = value[len(NODE_URI_PREFIX) :]
            if tail.isdigit():
                return int(tail)
    return None


def common_name_of(cert: dict[str, Any] | None) -> str | None:
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


async def accept(stream: trio.SocketStream, ctx: ssl.SSLContext) -> trio.SSLStream:
    """The server side of a handshake, bounded: a client that never finishes it costs a
    slot for HANDSHAKE_TIMEOUT_S at most."""
    tls = trio.SSLStream(stream, ctx, server_side=True)
    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
        await tls.do_handshake()
    return tls


async def connect(stream: trio.SocketStream, ctx: ssl.SSLContext, host: str) -> trio.SSLStream:
    tls = trio.SSLStream(stream, ctx, server_hostname=host)
    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
        await tls.do_handshake()
    return tls
