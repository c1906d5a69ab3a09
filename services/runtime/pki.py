"""custos's own development PKI: a CA, and certificates for services and people.

A certificate names its holder in the subject CN (the identity) and carries the
holder's roles as OU attributes, so the CA's signature vouches for both. Service
identities are ``svc:<name>``; people are their user name. Production replaces
the development CA by the organisation's, issuing certificates the same shape.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)

#: Roles each service identity gets in the development PKI.
SERVICE_ROLES = {
    "policy": ("svc:policy",),
    "signer": ("svc:signer",),
    "chain": ("svc:chain",),
    "audit": ("svc:audit",),
    "staking": ("svc:staking",),
    "worker": ("svc:worker",),
}


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_ca(pki_dir: Path, name: str = "custos development CA") -> Issued:
    """Creates the CA once; later calls return the existing one."""
    cert_path, key_path = pki_dir / "ca.crt", pki_dir / "ca.key"
    if cert_path.exists() and key_path.exists():
        return Issued(cert_path, key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + 10 * VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issued(cert_path, key_path)


def issue(
    pki_dir: Path,
    identity: str,
    roles: tuple[str, ...] | list[str],
    *,
    file_stem: str | None = None,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ca: Issued | None = None,
) -> Issued:
    """Issues (or re-issues) a certificate for ``identity`` with ``roles``, signed by the CA."""
    ca = ca or ensure_ca(pki_dir)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, identity)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, r) for r in roles]
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    stem = file_stem or identity.replace(":", "-")
    out = Issued(pki_dir / f"{stem}.crt", pki_dir / f"{stem}.key")
    _write_private(out.key, _key_pem(key))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


def ensure_service_certs(pki_dir: Path) -> dict[str, Issued]:
    """The CA plus one certificate per service and the worker; existing ones are kept."""
    ca = ensure_ca(pki_dir)
    out = {}
    for name, roles in SERVICE_ROLES.items():
        cert, key = pki_dir / f"{name}.crt", pki_dir / f"{name}.key"
        out[name] = (
            Issued(cert, key)
            if cert.exists() and key.exists()
            else issue(pki_dir, f"svc:{name}", roles, file_stem=name, ca=ca)
        )
    return out


def identity_of(pem: bytes) -> tuple[str, frozenset[str]]:
    """The (identity, roles) a certificate names."""
    cert = x509.load_pem_x509_certificate(pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    identity = str(cns[0].value) if cns else ""
    return identity, frozenset(str(o.value) for o in ous)
