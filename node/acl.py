"""Who may do what: the ACLs in the controller's state, matched as Kafka's
StandardAuthorizer matches them.

A request is allowed when some binding allows it and none denies it (deny wins).
Bindings match the principal itself or `User:*`, and a resource by its literal name, the
literal `*`, or a prefix. READ, WRITE, DELETE and ALTER each imply DESCRIBE; ALL implies
everything. WRITE on any topic or transactional id implies IDEMPOTENT_WRITE on the
cluster (Kafka 3.0), so whoever may write may use the default idempotent producer.
Super-users (`--super-users`), the cluster's own nodes and the holder of the deprecated
token are allowed everything. Enforced only where clients must log in
(`--require-users`): elsewhere every client is anonymous and may do anything, as before.

Verdicts are cached until the ACLs change: a produce checks one dictionary entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple, Protocol

from client.acls import (
    ALL,
    ALLOW,
    ALTER,
    CLUSTER,
    DELETE,
    DENY,
    DESCRIBE,
    IDEMPOTENT_WRITE,
    LITERAL,
    PREFIXED,
    READ,
    TOPIC,
    TRANSACTIONAL_ID,
    WILDCARD,
    WRITE,
)
from client.errors import AuthorizationFailedError
from client.protocol import AclBinding

log = logging.getLogger(__name__)

TOKEN_USER = "User:token"  # the holder of the cluster token (deprecated: make users)
ANONYMOUS = "User:ANONYMOUS"  # a client of a cluster without token or users
_IMPLY_DESCRIBE = frozenset({READ, WRITE, DELETE, ALTER, ALL})
_CACHE_MAX = 50_000


class Caller(Protocol):
    principal: str
    addr: str


class Principal(NamedTuple):
    """A Caller where there is no connection object to be one (the Kafka listener)."""

    principal: str
    addr: str


def _names(b: AclBinding, name: str) -> bool:
    if b.pattern == PREFIXED:
        return name.startswith(b.name)
    return b.pattern == LITERAL and (b.name == name or b.name == WILDCARD)


class Authorizer:
    def __init__(
        self,
        acls: Callable[[], list[AclBinding]],
        *,
        enabled: bool,
        super_users: frozenset[str] = frozenset(),
        on_refusal: Callable[[str, str], None] | None = None,
    ) -> None:
        """`acls`: the current bindings (a new list whenever they change); `on_refusal`
        counts a refusal by (operation, resource type)."""
        self._acls = acls
        self.enabled = enabled
        self.super_users = super_users | {TOKEN_USER}
        self._on_refusal = on_refusal
        self._cache: dict[tuple[str, str, str, str], bool] = {}
        self._cached_for: list[AclBinding] | None = None

    def is_super(self, principal: str) -> bool:
        return not self.enabled or principal in self.super_users or principal.startswith("Node:")

    def allows(self, principal: str, operation: str, resource_type: str, name: str) -> bool:
        if self.is_super(principal):
            return True
        acls = self._acls()
        if acls is not self._cached_for or len(self._cache) > _CACHE_MAX:
            self._cache, self._cached_for = {}, acls
        key = (principal, operation, resource_type, name)
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self._cache[key] = self._decide(acls, principal, operation, resource_type, name)
        return verdict

    def _decide(self, acls: list[AclBinding], principal: str, op: str, rtype: str, name: str) -> bool:
        allowed = False
        for b in acls:
            if b.resource_type != rtype or b.principal not in (principal, "User:*") or not _names(b, name):
                continue
            if b.permission == DENY and b.operation in (op, ALL):
                return False
            if b.permission == ALLOW and (
                b.operation in (op, ALL) or (op == DESCRIBE and b.operation in _IMPLY_DESCRIBE)
            ):
                allowed = True
        if not allowed and op == IDEMPOTENT_WRITE and rtype == CLUSTER:
            return self._writes_anywhere(acls, principal)
        return allowed

    def _writes_anywhere(self, acls: list[AclBinding], principal: str) -> bool:
        """WRITE allowed on some topic or transactional id (not wholly denied again)."""
        for b in acls:
            if (
                b.permission == ALLOW
                and b.operation in (WRITE, ALL)
                and b.resource_type in (TOPIC, TRANSACTIONAL_ID)
                and b.principal in (principal, "User:*")
            ):
                if self._decide(acls, principal, WRITE, b.resource_type, b.name):  # (a name it covers)
                    return True
        return False

    def check(self, caller: Caller, operation: str, resource_type: str, name: str) -> None:
        """Raise AuthorizationFailedError (logged and counted: the audit trail) unless
        the caller may do `operation` on the resource."""
        if self.allows(caller.principal, operation, resource_type, name):
            return
        raise self._refusal(caller, operation, resource_type, name)

    def _refusal(self, caller: Caller, operation: str, resource_type: str, name: str) -> AuthorizationFailedError:
        what = "the cluster" if resource_type == CLUSTER else f"{resource_type} {name!r}"
        log.warning("refused %s from %s: %s on %s", caller.principal, caller.addr, operation, what)
        if self._on_refusal is not None:
            self._on_refusal(operation, resource_type)
        return AuthorizationFailedError(
            f"{caller.principal} may not {operation} {what} (an administrator grants it with "
            f"`tidemq acl add --principal {caller.principal} --operation {operation} "
            f"{'--cluster' if resource_type == CLUSTER else f'--{resource_type} {name}'}`)",
            principal=caller.principal,
            operation=operation,
            resource_type=resource_type,
            resource=name,
        )
