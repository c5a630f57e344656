"""SASL on the Kafka listener (SaslHandshake v1, SaslAuthenticate): Kafka clients log in
as TideMQ users, with SCRAM-SHA-256 (client/scram.py: the same messages) or PLAIN (the
password checked against the stored SCRAM keys; use it inside TLS).

One `SaslSession` per connection. Where the node requires users (`--require-users`), a
connection may send only ApiVersions, SaslHandshake and SaslAuthenticate until it has
logged in; anything else closes it, as a Kafka broker's SASL listener does. Elsewhere
logging in is optional. A failed login is answered SASL_AUTHENTICATION_FAILED, logged
with the user and address, counted, and the connection is closed after the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from client.scram import MECHANISM as SCRAM_SHA_256
from client.scram import ScramError, ScramServer, UserCredential, check_password
from node.acl import ANONYMOUS, Principal
from node.kafka_wire import API_VERSIONS, KafkaError, Request, build, response_class

log = logging.getLogger(__name__)

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
MECHANISMS = (SCRAM_SHA_256, "PLAIN")


class SaslSession:
    def __init__(self, users: Callable[[str], UserCredential | None], required: bool, addr: str) -> None:
        self._users = users
        self.required = required
        self.addr = addr
        self.mechanism: str | None = None
        self.principal: str | None = None  # "User:NAME" once logged in
        self.failed = False  # answer, then close
        self._scram: ScramServer | None = None

    def caller(self) -> Principal:
        """Who this connection's requests come from, for the ACLs."""
        return Principal(self.principal or ANONYMOUS, self.addr)

    def admits(self, api_key: int) -> bool:
        """Whether a request of this API may be served on the connection now."""
        return (
            self.principal is not None
            or not self.required
            or api_key in (API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE)
        )

    def handshake(self, req: Request) -> Any:
        mechanism = req.body.mechanism
        out: dict[str, Any] = {"mechanisms": list(MECHANISMS)}
        if self.principal is not None:
            out["error_code"] = KafkaError.illegal_sasl_state
        elif mechanism not in MECHANISMS:
            out["error_code"] = KafkaError.unsupported_sasl_mechanism
        else:
            self.mechanism = mechanism
            self._scram = ScramServer(self._users) if mechanism == SCRAM_SHA_256 else None
        return build(response_class(SASL_HANDSHAKE, req.version), out)

    def authenticate(self, req: Request) -> Any:
        data: bytes = req.body.auth_bytes
        out: dict[str, Any] = {"auth_bytes": b""}
        try:
            if self.mechanism is None or self.principal is not None:
                out["error_code"] = KafkaError.illegal_sasl_state
                out["error_message"] = "SaslHandshake first, and once per connection"
                self.failed = True
            elif self.mechanism == "PLAIN":
                self._plain(data)
            else:
                out["auth_bytes"] = self._scram_step(data)
        except ScramError as exc:
            user = self._scram.user if self._scram is not None else None
            log.warning("Kafka SASL %s login failed for %r from %s: %s", self.mechanism, user, self.addr, exc)
            out.update(
                error_code=KafkaError.sasl_authentication_failed,
                error_message="authentication failed: wrong user or password",
                auth_bytes=b"",
            )
            self.failed = True
        return build(response_class(SASL_AUTHENTICATE, req.version), out)

    def _plain(self, data: bytes) -> None:
        parts = data.split(b"\0")
        if len(parts) != 3:
            raise ScramError("a PLAIN message is authzid NUL user NUL password")
        user, password = parts[1].decode(errors="replace"), parts[2].decode(errors="replace")
        if not check_password(self._users(user), password):
            raise ScramError(f"wrong password for {user!r} (or no such user)")
        self.principal = f"User:{user}"

    def _scram_step(self, data: bytes) -> bytes:
        assert self._scram is not None
        message = data.decode(errors="replace")
        if self._scram.user is None:
            return self._scram.first(message).encode()
        server_final = self._scram.final(message)
        self.principal = f"User:{self._scram.user}"
        return server_final.encode()
