"""A local certificate authority for TLS clusters: a CA, node certificates that name
their node id, and client certificates (with the `cryptography` package).

    python scripts/certs.py DIR --nodes 3 [--host 127.0.0.1] [--client NAME ...]

writes DIR/ca.pem (and ca.key), DIR/node-N.pem and node-N.key for each node, and
DIR/client-NAME.pem/.key. A node certificate is for both ends of a link (server and
client authentication): it names the node in a URI (`tidemq://node/N`, which a node
checks against the id a peer claims) and the hosts it serves on, so clients verify the
host name as usual. `scripts/cluster up --secure` and the tests use it; production
clusters bring certificates from their own CA, with the same URI.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NODE_URI = "tidemq://node/{}"  # node/tls.py reads it back
VALID_DAYS = 825


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TideMQ"), x509.NameAttribute(NameOID.COMMON_NAME, common)]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


class Authority:
    """A CA kept in a directory: made once, then loaded."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert_path, self.key_path = self.dir / "ca.pem", self.dir / "ca.key"
        if self.cert_path.exists() and self.key_path.exists():
            self.key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
            self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            return
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("TideMQ local CA"))
            .issuer_name(_name("TideMQ local CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        _write_key(self.key, self.key_path)
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _issue(self, stem: str, common: str, sans: list[x509.GeneralName], usages: list) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())  # type: ignore[arg-type]
        out = Issued(self.dir / f"{stem}.pem", self.dir / f"{stem}.key")
        out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, out.key)
        return out

    def node(self, node_id: int, hosts: list[str] = ["127.0.0.1", "localhost"]) -> Issued:  # noqa: B006 - read only
        """A node's certificate: its id in a URI, its hosts as DNS names or IP addresses."""
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(NODE_URI.format(node_id))]
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        return self._issue(f"node-{node_id}", f"tidemq-node-{node_id}", sans, usages)

    def client(self, name: str) -> Issued:
        """A client certificate: its common name is the principal it stands for."""
        return self._issue(f"client-{name}", name, [], [ExtendedKeyUsageOID.CLIENT_AUTH])


def main() -> None:
    p = argparse.ArgumentParser(
        prog="scripts/certs.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("dir", type=Path)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--host", action="append", default=None, help="a host the nodes serve on (repeatable)")
    p.add_argument("--client", action="append", default=[], help="a client certificate for NAME (repeatable)")
    args = p.parse_args()
    ca = Authority(args.dir)
    for n in range(1, args.nodes + 1):
        ca.node(n, args.host or ["127.0.0.1", "localhost"])
    for name in args.client:
        ca.client(name)
    print(f"certificates in {args.dir} (CA: {ca.cert_path})")


if __name__ == "__main__":
    main()
