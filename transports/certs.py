"""A certificate authority and one certificate per party, for mutual TLS.

Keys are ECDSA P-256 (fast to make and to verify). Each leaf certificate carries its
party name as a DNS subject-alternative name, which TLS verifies against the name the
peer is expected to have.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"


@dataclass(frozen=True)
class Credentials:
    """Where one party's TLS files are."""

    name: str
    ca_file: Path
    cert_file: Path
    key_file: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def generate_certificates(outdir: str | os.PathLike, names: tuple[str, ...] = ("party0", "party1", "owner"),
                          *, days: int = 365) -> dict[str, Credentials]:
    """Make a fresh CA in `outdir` and a certificate + key per name; returns their paths."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("lpgan job CA")
    ca_cert = (_builder(ca_name, ca_name, ca_key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=True, crl_sign=True,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    (out / CA_CERT).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out / CA_KEY, ca_key)
    result = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (_builder(_name(name), ca_name, key.public_key(), days)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_file, key_file = out / f"{name}.pem", out / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_file, key)
        result[name] = Credentials(name, out / CA_CERT, cert_file, key_file)
    return result


def load_credentials(certdir: str | os.PathLike, name: str) -> Credentials:
    """The credentials of `name` in a directory made by generate_certificates."""
    d = Path(certdir)
    creds = Credentials(name, d / CA_CERT, d / f"{name}.pem", d / f"{name}.key")
    missing = [str(p) for p in (creds.ca_file, creds.cert_file, creds.key_file) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing TLS files {', '.join(missing)}; create them with `lpgan certs {d}`")
    return creds
