"""Self-signed client certificates for client assertions (RFC 7523): the public part goes to the app's
keyCredentials, the private key and certificate go to Key Vault as one PEM."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ClientCertificate:
    pem: str  # private key (PKCS#8) followed by the certificate: what msal and Key Vault take
    der_b64: str  # the certificate, base64 DER: what Graph's keyCredentials.key takes
    thumbprint: str  # SHA-1, hex: msal's `thumbprint`
    start: datetime
    end: datetime


def msal_client_credential(pem: str) -> dict[str, str]:
    """msal's client_credential for a PEM as this API stores it (key and certificate): the key signs the
    client assertion, and the certificate's SHA-1 thumbprint (x5t) tells Entra which of the app's
    keyCredentials verifies it. The thumbprint is computed from the certificate itself, never trusted from a
    tag. Raises ValueError when the PEM holds no certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificate = x509.load_pem_x509_certificate(pem.encode())
    return {"private_key": pem, "thumbprint": certificate.fingerprint(hashes.SHA1()).hex().upper()}


def make_certificate(common_name: str, *, start: datetime, days: int) -> ClientCertificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    # Backdated a little: clocks differ, and Entra refuses a certificate that is not yet valid.
    not_before = start - timedelta(minutes=5)
    end = start + timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode() + cert.public_bytes(serialization.Encoding.PEM).decode()
    return ClientCertificate(
        pem=pem,
        der_b64=base64.b64encode(der).decode(),
        thumbprint=hashlib.sha1(der).hexdigest().upper(),
        start=not_before,
        end=end,
    )
