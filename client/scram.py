"""SCRAM-SHA-256 (RFC 5802, RFC 7677), both sides, pure: how a user proves a password
without sending it, and how a node checks the proof against what it stores (a salt, an
iteration count and two keys derived from the password, never the password).

    client                                   node
    first():  n,,n=USER,r=CNONCE      ->
                                      <-     first(..): r=CNONCE+SNONCE,s=SALT,i=ITERATIONS
    final(..): c=biws,r=...,p=PROOF   ->
                                      <-     final(..): v=SERVER_SIGNATURE (or refused)
    verify(..): the node knew the password's keys too

The same messages are Kafka's SASL/SCRAM-SHA-256 exchange, so the Kafka listener uses
this module as it is. An unknown user gets a challenge like any other (from a salt
derived from the name), so a client cannot tell unknown users from wrong passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

import msgspec

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 8192  # RFC 7677 asks for at least 4096
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 1 << 20
_GS2_HEADER = "n,,"  # no channel binding, no authorization identity


class ScramError(Exception):
    """A SCRAM message that does not parse, or a proof that does not hold."""


class UserCredential(msgspec.Struct, array_like=True, frozen=True):
    """What a node stores of a user's password (RFC 5802's StoredKey and ServerKey)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    """(ClientKey, StoredKey, ServerKey) of a password."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return client_key, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")


def credential(password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> UserCredential:
    """The credential to store for `password` (computed by whoever sets it: the password
    itself never goes to a node)."""
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be {MIN_ITERATIONS}..{MAX_ITERATIONS}, not {iterations}")
    salt = salt if salt is not None else os.urandom(16)
    _, stored, server = _keys(password, salt, iterations)
    return UserCredential(salt, iterations, stored, server)


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _unescape(name: str) -> str:
    return name.replace("=2C", ",").replace("=3D", "=")


def _fields(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ScramError(f"malformed SCRAM attribute {part[:40]!r}")
        out.setdefault(key, value)
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ScramError("malformed base64 in a SCRAM message") from None


class ScramClient:
    def __init__(self, user: str, password: str, nonce: str | None = None) -> None:
        self.user, self.password = user, password
        self.nonce = nonce or secrets.token_urlsafe(24)
        self._first_bare = f"n={_escape(user)},r={self.nonce}"
        self._signature = b""

    def first(self) -> str:
        return _GS2_HEADER + self._first_bare

    def final(self, server_first: str) -> str:
        f = _fields(server_first)
        try:
            nonce, salt, iterations = f["r"], _unb64(f["s"]), int(f["i"])
        except (KeyError, ValueError):
            raise ScramError("the server's first SCRAM message lacks r, s or i") from None
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise ScramError("the server's nonce does not extend ours")
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise ScramError(f"the server asks for {iterations} iterations")
        without_proof = f"c={_b64(_GS2_HEADER.encode())},r={nonce}"
        auth = f"{self._first_bare},{server_first},{without_proof}".encode()
        client_key, stored, server_key = _keys(self.password, salt, iterations)
        proof = bytes(a ^ b for a, b in zip(client_key, _hmac(stored, auth), strict=True))
        self._signature = _hmac(server_key, auth)
        return f"{without_proof},p={_b64(proof)}"

    def verify(self, server_final: str) -> None:
        """The node's signature proves it holds the password's keys (not an impostor)."""
        f = _fields(server_final)
        if "e" in f:
            raise ScramError(f"the server refused: {f['e']}")
        if not hmac.compare_digest(_unb64(f.get("v", "")), self._signature):
            raise ScramError("the server's signature does not match: it does not know this password")


class ScramServer:
    """One exchange on a node. `lookup(user)` gives the stored credential or None;
    `secret` seeds the made-up salts of unknown users (stable per node and name)."""

    def __init__(self, lookup, secret: bytes = b"") -> None:
        self._lookup = lookup
        self._secret = secret or os.urandom(16)
        self.user: str | None = None
        self._cred: UserCredential | None = None
        self._auth_prefix = ""
        self._nonce = ""

    def first(self, client_first: str) -> str:
        if not client_first.startswith(_GS2_HEADER):
            raise ScramError("only SCRAM without channel binding or authorization identity (n,,) is served")
        bare = client_first[len(_GS2_HEADER) :]
        f = _fields(bare)
        if "n" not in f or "r" not in f or not f["r"]:
            raise ScramError("the client's first SCRAM message lacks n or r")
        self.user = _unescape(f["n"])
        cred = self._lookup(self.user)
        self._cred = cred
        if cred is None:  # answer as for a user that exists: no hint either way
            salt = _hmac(self._secret, self.user.encode())[:16]
            iterations = DEFAULT_ITERATIONS
        else:
            salt, iterations = cred.salt, cred.iterations
        self._nonce = f["r"] + secrets.token_urlsafe(24)
        server_first = f"r={self._nonce},s={_b64(salt)},i={iterations}"
        self._auth_prefix = f"{bare},{server_first}"
        return server_first

    def final(self, client_final: str) -> str:
        """The server's final message; ScramError if the proof does not hold."""
        without_proof, sep, proof_attr = client_final.rpartition(",p=")
        if not sep:
            raise ScramError("the client's final SCRAM message has no proof")
        f = _fields(without_proof)
        if f.get("r") != self._nonce or f.get("c") != _b64(_GS2_HEADER.encode()):
            raise ScramError("the client's final SCRAM message does not continue this exchange")
        proof = _unb64(proof_attr)
        auth = f"{self._auth_prefix},{without_proof}".encode()
        cred = self._cred
        if cred is None or len(proof) != 32:
            raise ScramError("wrong user or password")
        client_key = bytes(a ^ b for a, b in zip(proof, _hmac(cred.stored_key, auth), strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), cred.stored_key):
            raise ScramError("wrong user or password")
        return f"v={_b64(_hmac(cred.server_key, auth))}"


def check_password(cred: UserCredential | None, password: str) -> bool:
    """A plain password against a stored credential (Kafka's SASL/PLAIN, inside TLS)."""
    if cred is None:
        return False
    _, stored, _ = _keys(password, cred.salt, cred.iterations)
    return hmac.compare_digest(stored, cred.stored_key)
