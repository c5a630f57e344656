"""SCRAM-SHA-256 (client.scram): RFC 7677's example exchange, and both sides together:
a right password, a wrong one, an unknown user (indistinguishable), a tampered proof."""

from __future__ import annotations

import base64

import pytest

from client.scram import ScramClient, ScramError, ScramServer, check_password, credential

# RFC 7677, section 3.
USER, PASSWORD = "user", "pencil"
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_rfc7677_example():
    client = ScramClient(USER, PASSWORD, nonce=CLIENT_NONCE)
    assert client.first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert client.final(SERVER_FIRST) == CLIENT_FINAL
    client.verify(SERVER_FINAL)
    with pytest.raises(ScramError):
        client.verify("v=" + base64.b64encode(b"x" * 32).decode())


def exchange(users: dict, user: str, password: str) -> None:
    client = ScramClient(user, password)
    server = ScramServer(users.get)
    server_first = server.first(client.first())
    client.verify(server.final(client.final(server_first)))


def test_both_sides_together():
    users = {"alice": credential("s3cret", iterations=4096), "bob,=odd": credential("pw", iterations=4096)}
    exchange(users, "alice", "s3cret")
    exchange(users, "bob,=odd", "pw")  # names are escaped on the wire
    with pytest.raises(ScramError, match="wrong user or password"):
        exchange(users, "alice", "guess")
    with pytest.raises(ScramError, match="wrong user or password"):
        exchange(users, "mallory", "anything")
    # An unknown user's challenge looks like a known one's (a salt, the usual count).
    server = ScramServer(users.get)
    first = server.first(ScramClient("mallory", "x").first())
    assert ",s=" in first and first.endswith(",i=8192")


def test_a_tampered_or_replayed_final_message_is_refused():
    users = {"alice": credential("s3cret", iterations=4096)}
    client, server = ScramClient("alice", "s3cret"), ScramServer(users.get)
    final = client.final(server.first(client.first()))
    with pytest.raises(ScramError):
        server.final(final.replace("c=biws", "c=eSws"))
    other = ScramServer(users.get)
    other.first(ScramClient("alice", "s3cret").first())
    with pytest.raises(ScramError):  # another exchange's nonce
        other.final(final)


def test_plain_passwords_check_against_the_stored_credential():
    cred = credential("s3cret", iterations=4096)
    assert check_password(cred, "s3cret") and not check_password(cred, "S3cret") and not check_password(None, "x")
    with pytest.raises(ValueError):
        credential("x", iterations=10)
