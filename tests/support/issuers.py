"""The tests' token issuers and keys: one HS256 issuer, and one RSA key trusted two ways
(a static PEM issuer and an inline-JWKS issuer)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from authz_service.devtokens import sign_dev_token

ISSUER = "https://issuer.test"  # HS256
AUDIENCE = "gateway"
SECRET = "test-issuer-secret-that-is-at-least-32-characters"
RS_ISSUER = "https://rs.issuer.test"  # RS256, the key as a static PEM
JWKS_ISSUER = "https://jwks.issuer.test"  # RS256, the key in an inline JWKS
JWKS_KID = "k1"


@dataclass(frozen=True)
class RsaKey:
    """An RSA key pair: the private key signs, the public one is trusted."""

    private_pem: bytes
    public_pem: str
    jwk: dict[str, Any]  # the public key as a JWK with kid JWKS_KID


@functools.cache
def rsa_key() -> RsaKey:
    """One 2048-bit key per test process (generating one costs a noticeable fraction of a
    second)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return RsaKey(private_pem, public_pem.decode(), {**jwk, "kid": JWKS_KID, "alg": "RS256"})


def issuer_entry(issuer: str, algorithm: str, **key: Any) -> dict[str, Any]:
    """One entry of AUTHZ_JWT_ISSUERS."""
    return {"issuer": issuer, "audiences": [AUDIENCE], "algorithms": [algorithm], **key}


def hs256_issuer() -> dict[str, Any]:
    return issuer_entry(ISSUER, "HS256", hs256_secret=SECRET)


def every_issuer() -> list[dict[str, Any]]:
    """The HS256 issuer, and the RSA key as a static-PEM issuer and as an inline-JWKS one."""
    key = rsa_key()
    return [
        hs256_issuer(),
        issuer_entry(RS_ISSUER, "RS256", public_key_pem=key.public_pem),
        issuer_entry(JWKS_ISSUER, "RS256", jwks={"keys": [key.jwk]}),
    ]


def issuers_json(entries: Sequence[dict[str, Any]] | None = None) -> str:
    """AUTHZ_JWT_ISSUERS trusting `entries` (default: the HS256 issuer only)."""
    return json.dumps(list(entries) if entries is not None else [hs256_issuer()])


def hs256_token(
    sub: str = "user-1",
    roles: Sequence[str] = ("customer",),
    customer_id: str | None = "cust-1",
    plan: str = "standard",
    trial_mode: bool = False,
    **claims: Any,
) -> str:
    """A valid token of the HS256 issuer."""
    return sign_dev_token(
        SECRET, ISSUER, AUDIENCE, sub, roles, customer_id, plan, trial_mode, **claims
    )
