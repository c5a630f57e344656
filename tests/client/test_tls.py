"""A client's TLS settings (client.tls): off unless asked for or a file is given, the
TIDEMQ_TLS_* defaults, and a node's own client never taking a client's environment."""

from __future__ import annotations

import ssl

import pytest

from client.cluster import ClusterClient
from client.tls import tls_context
from scripts.certs import Authority


def test_tls_is_on_when_asked_for_or_given_a_file(tmp_path, monkeypatch):
    for var in ("TIDEMQ_TLS", "TIDEMQ_TLS_CA", "TIDEMQ_TLS_CERT", "TIDEMQ_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert tls_context() is None
    assert isinstance(tls_context(tls=True), ssl.SSLContext)  # the system's CAs
    ca = Authority(tmp_path)
    ctx = tls_context(tls_ca=str(ca.cert_path))
    assert ctx is not None and ctx.check_hostname and ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    monkeypatch.setenv("TIDEMQ_TLS_CA", str(ca.cert_path))
    assert tls_context() is not None and tls_context(tls=False) is None
    client = ca.client("alice")
    assert tls_context(tls_cert=str(client.cert), tls_key=str(client.key)) is not None
    with pytest.raises(ValueError, match="together"):
        tls_context(tls_cert=str(client.cert))


def test_a_nodes_own_client_ignores_the_client_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDEMQ_TLS_CA", str(Authority(tmp_path).cert_path))
    assert ClusterClient("127.0.0.1:1").ssl_context is not None
    assert ClusterClient("127.0.0.1:1", peer=object()).ssl_context is None  # type: ignore[arg-type]
