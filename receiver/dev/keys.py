"""A local stand-in for Google's token signer, for the demo, tests and curl.

`DevSigner.create(directory)` makes (once) an RSA key and a self-signed certificate,
and writes `certs.json` in the format of https://www.googleapis.com/oauth2/v1/certs
({kid: PEM certificate}). Point RECEIVER_CERTS_URL at it (file:// or any HTTP server)
and the receiver verifies these tokens with exactly the code that verifies Google's.
"""

from __future__ import annotations

import datetime
import functools
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

DEV_SENDER = "pubsub-push@receiver-dev.iam.gserviceaccount.com"
_KEY_FILE = "signing-key.pem"
_CERTS_FILE = "certs.json"


@dataclass(frozen=True)
class DevSigner:
    private_key_pem: bytes
    kid: str
    certs_path: Path

    @functools.cached_property
    def _signer(self) -> crypt.RSASigner:
        # Loading the key checks it, which costs more than signing: do it once.
        signer: crypt.RSASigner = crypt.RSASigner.from_string(self.private_key_pem, key_id=self.kid)
        return signer

    @property
    def certs_url(self) -> str:
        return self.certs_path.resolve().as_uri()

    @classmethod
    def create(cls, directory: Path) -> DevSigner:
        """Load the dev key from `directory`, making it first if it is not there."""
        directory.mkdir(parents=True, exist_ok=True)
        key_path, certs_path = directory / _KEY_FILE, directory / _CERTS_FILE
        if not key_path.exists() or not certs_path.exists():
            private_pem, certificate_pem = _new_key_and_certificate()
            kid = f"dev-{secrets.token_hex(8)}"  # two keys made in one second differ
            key_path.write_bytes(private_pem)
            key_path.chmod(0o600)
            certs_path.write_text(json.dumps({kid: certificate_pem.decode()}, indent=1))
        kid = next(iter(json.loads(certs_path.read_text())))
        return cls(key_path.read_bytes(), kid, certs_path)

    def mint(
        self,
        audience: str,
        email: str | None = None,
        lifetime_seconds: int = 3600,
        **claims: object,
    ) -> str:
        """A token shaped like the one Pub/Sub sends; `claims` override or add fields."""
        now = int(time.time())
        payload: dict[str, object] = {
            "iss": "https://accounts.google.com",
            "aud": audience,
            "azp": "108000000000000000001",
            "sub": "108000000000000000001",
            "email": email or DEV_SENDER,
            "email_verified": True,
            "iat": now,
            "exp": now + lifetime_seconds,
        }
        payload.update(claims)
        token: bytes = jwt.encode(self._signer, payload)
        return token.decode()


def _new_key_and_certificate() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return self_signed(key, "receiver dev signer", datetime.timedelta(days=3650))


def self_signed(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    common_name: str,
    lifetime: datetime.timedelta,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> tuple[bytes, bytes]:
    """`key` and a certificate it signs for itself (valid from a day ago), both PEM.

    `extensions`: (extension, critical) pairs, such as the address a TLS server answers on.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + lifetime)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    certificate = builder.sign(key, hashes.SHA256())
    return private_pem, certificate.public_bytes(serialization.Encoding.PEM)
