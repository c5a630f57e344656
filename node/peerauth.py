"""Nodes prove to each other that they hold the cluster's peer secret, without sending it.

A challenge-response in both directions over one round trip and a half (the shape of
SCRAM's proofs, with a shared key):

    dialer  -> Hello(peer_node=D, nonce=Nd)
    listener-> PeerChallenge(node_id=L, nonce=Nl, proof=HMAC(secret, "listener"|D|L|Nd|Nl))
    dialer  -> PeerProof(HMAC(secret, "dialer"|D|L|Nd|Nl))
    listener-> HelloOk(L)

Both nonces are fresh per connection, so a recorded proof is worth nothing on the next
one, and the roles and node ids are inside the MAC, so a proof cannot be reflected back
or claimed for another node. Clients never hold the secret, so no client connection can
ever carry Raft or broker-to-broker traffic.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from client.errors import AuthFailedError
from client.protocol import PROTOCOL_VERSION, Hello, PeerChallenge
from node.peerprotocol import NODE_VERSIONS

NONCE_BYTES = 32
MIN_SECRET_CHARS = 16


def new_secret() -> str:
    """A fresh secret for a new cluster (scripts/cluster up writes one)."""
    return secrets.token_urlsafe(32)


class PeerCredential:
    """This node's side of the handshake, as dialer (`hello`, `prove`: the
    `client.connection.PeerAuth` protocol) and as listener (`challenge`, `verify`)."""

    def __init__(self, node_id: int, secret: str) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"the peer secret must be at least {MIN_SECRET_CHARS} characters")
        self.node_id = node_id
        self._key = secret.encode()

    def _mac(self, role: bytes, dialer: int, listener: int, dialer_nonce: bytes, listener_nonce: bytes) -> bytes:
        msg = b"|".join([b"tidemq-peer/1", role, b"%d" % dialer, b"%d" % listener, dialer_nonce, listener_nonce])
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    # -- dialing another node -----------------------------------------------------------

    def hello(self, client_id: str) -> Hello:
        return Hello(
            PROTOCOL_VERSION,
            client_id,
            None,
            peer_node=self.node_id,
            nonce=secrets.token_bytes(NONCE_BYTES),
            versions=NODE_VERSIONS,
        )

    def prove(self, hello: Hello, challenge: PeerChallenge) -> bytes:
        assert hello.nonce is not None
        expected = self._mac(b"listener", self.node_id, challenge.node_id, hello.nonce, challenge.nonce)
        if not hmac.compare_digest(expected, challenge.proof):
            raise AuthFailedError(f"node {challenge.node_id} does not hold this cluster's peer secret")
        return self._mac(b"dialer", self.node_id, challenge.node_id, hello.nonce, challenge.nonce)

    # -- being dialed -------------------------------------------------------------------

    def challenge(self, hello: Hello) -> tuple[PeerChallenge, bytes]:
        """The challenge to send, and the proof the dialer must answer with."""
        assert hello.peer_node is not None and hello.nonce is not None
        nonce = secrets.token_bytes(NONCE_BYTES)
        proof = self._mac(b"listener", hello.peer_node, self.node_id, hello.nonce, nonce)
        expected = self._mac(b"dialer", hello.peer_node, self.node_id, hello.nonce, nonce)
        return PeerChallenge(self.node_id, nonce, proof), expected

    @staticmethod
    def verify(expected: bytes, proof: bytes) -> bool:
        return hmac.compare_digest(expected, proof)
