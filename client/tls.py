"""A client's TLS settings: every client class takes `tls`, `tls_ca`, `tls_cert` and
`tls_key`, each defaulting to its environment variable (`TIDEMQ_TLS_CA`,
`TIDEMQ_TLS_CERT`, `TIDEMQ_TLS_KEY`; `TIDEMQ_TLS=1` turns TLS on with the system's CAs).

TLS is on when asked for (`tls=True`) or when any of the files is given: a CA to trust,
or a certificate to present (a client certificate, which the node may map to a user).
The node's certificate must chain to the CA (the system's if none is given) and name
the host dialed: hostname verification is always on, as in every TLS client worth the
name. TLS 1.2 and up.
"""

from __future__ import annotations

import os
import ssl
from typing import TypedDict


class ConnectOptions(TypedDict, total=False):
    """The security keyword arguments every client class takes (TLS, and a user to log
    in as), for passing them on."""

    tls: bool | None
    tls_ca: str | None
    tls_cert: str | None
    tls_key: str | None
    username: str | None
    password: str | None


def tls_context(
    tls: bool | None = None, tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None
) -> ssl.SSLContext | None:
    """The context the client connects with, or None for plain TCP."""
    env = os.environ
    tls_ca = tls_ca or env.get("TIDEMQ_TLS_CA") or None
    tls_cert = tls_cert or env.get("TIDEMQ_TLS_CERT") or None
    tls_key = tls_key or env.get("TIDEMQ_TLS_KEY") or None
    if tls is None:
        tls = env.get("TIDEMQ_TLS", "").lower() in ("1", "true", "yes") or any((tls_ca, tls_cert, tls_key))
    if not tls:
        return None
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together (a client certificate and its key)")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls_ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls_cert is not None:
        ctx.load_cert_chain(tls_cert, tls_key)
    return ctx
