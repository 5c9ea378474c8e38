"""Key sources that never change: an HS256 secret, a PEM public key, or an inline JWK set."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK, PyJWKSet
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWKError, PyJWKSetError

from authz_service.ports import KeyUnknownError


class KeyConfigError(ValueError):
    """A configured key cannot be loaded; the message names the issuer, never the key."""


class StaticKeySource:
    """Keys indexed by `kid`; a key without a `kid` answers tokens that carry none (or any)."""

    def __init__(self, keys: dict[str | None, PyJWK]) -> None:
        self._keys = keys

    async def key_for(self, kid: str | None) -> PyJWK:
        key = self._keys.get(kid)
        if key is None and len(self._keys) == 1 and None in self._keys:
            key = self._keys[None]
        if key is None:
            raise KeyUnknownError(kid)
        return key

    async def close(self) -> None:
        return None

    @classmethod
    def from_hs256_secret(cls, secret: str) -> StaticKeySource:
        encoded = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
        return cls({None: PyJWK({"kty": "oct", "k": encoded}, algorithm="HS256")})

    @classmethod
    def from_pem(cls, issuer: str, pem: str) -> StaticKeySource:
        try:
            public_key = load_pem_public_key(pem.encode())
        except ValueError as exc:
            raise KeyConfigError(
                f"issuer {issuer!r}: public_key_pem is not a PEM public key"
            ) from exc
        jwk: dict[str, Any]
        if isinstance(public_key, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
        else:
            raise KeyConfigError(f"issuer {issuer!r}: unsupported public key type")
        return cls({None: PyJWK(jwk)})

    @classmethod
    def from_jwks(cls, issuer: str, jwks: dict[str, Any]) -> StaticKeySource:
        return cls(keys_of_jwks(issuer, jwks))


def keys_of_jwks(issuer: str, jwks: dict[str, Any]) -> dict[str | None, PyJWK]:
    """The public verification keys of a JWK set, by `kid`; private or secret keys are refused."""
    for entry in jwks.get("keys", []):
        if isinstance(entry, dict) and ("d" in entry or entry.get("kty") == "oct"):
            raise KeyConfigError(f"issuer {issuer!r}: a JWK set holds only public keys")
    try:
        key_set = PyJWKSet.from_dict(jwks)
    except (PyJWKSetError, PyJWKError) as exc:
        raise KeyConfigError(f"issuer {issuer!r}: invalid JWK set: {exc}") from exc
    return {key.key_id: key for key in key_set.keys}
