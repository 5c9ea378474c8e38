"""The bench's RS256 issuer: a fresh key pair, its JWKS and a pool of signed bearer tokens."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://issuer.bench.local/"
AUDIENCE = "gateway-bench"
KID = "bench-1"


@dataclass(frozen=True)
class BenchIssuer:
    private_key: rsa.RSAPrivateKey
    jwks: dict[str, object]

    @property
    def jwks_json(self) -> str:
        return json.dumps(self.jwks, separators=(",", ":"))

    def token(self, user: int, *, role: str = "customer", ttl: int = 4 * 3600) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"bench-user-{user}",
            "customer_id": f"bench-cust-{user % 10}",
            "roles": [role],
            "plan": "enterprise",
            "trial_mode": False,
            "iat": now,
            "nbf": now - 5,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": KID})


def new_issuer() -> BenchIssuer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": KID, "alg": "RS256", "use": "sig"})
    return BenchIssuer(key, {"keys": [jwk]})
