"""Throwaway certificate authorities and certificates for the mTLS tests (the ``cryptography`` package).

``ca = TestCA(tmp_path / "ca")`` makes a self-signed CA; ``ca.tls_dir(path, "store")`` writes
``tls.crt``, ``tls.key`` and ``ca.crt`` there (what a Kubernetes TLS Secret mounts) for a certificate
valid as server and client on ``localhost``/``127.0.0.1`` (and ``extra_names``); ``ca.issue(...)``
writes ``NAME.crt``/``NAME.key``. EC P-256 keys: generated in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class TestCA:
    """A self-signed CA in ``directory`` (``ca.crt``) that issues certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "facenas test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_path = directory / "ca.crt"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, directory: Path, name: str, extra_names: tuple[str, ...] = ()) -> Issued:
        """``directory/NAME.crt`` and ``NAME.key``: a server-and-client certificate for ``name``."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            *(x509.DNSName(n) for n in extra_names),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        issued = Issued(directory / f"{name}.crt", directory / f"{name}.key", self.ca_path)
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(_key_pem(key))
        issued.key.chmod(0o600)
        return issued

    def tls_dir(self, directory: Path, name: str = "facenas", extra_names: tuple[str, ...] = ()) -> Path:
        """``directory`` with ``tls.crt``, ``tls.key`` and ``ca.crt``, as a Kubernetes Secret mounts them."""
        issued = self.issue(directory / ".issued", name, extra_names)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls.crt").write_bytes(issued.cert.read_bytes())
        (directory / "tls.key").write_bytes(issued.key.read_bytes())
        (directory / "tls.key").chmod(0o600)
        (directory / "ca.crt").write_bytes(self.ca_path.read_bytes())
        return directory
