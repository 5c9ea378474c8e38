"""The development token issuer of `make up`: an HS256 secret created once under var/ (0600)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from authz_service.devtokens import sign_dev_token

DEV_ISSUER = "https://dev.gateway.local"
DEV_AUDIENCE = "gateway"
KEY_FILE = "dev-issuer.json"
# In containers the secret comes from the environment (compose/.env), never from a file.
SECRET_ENV = "GATEWAY_DEV_JWT_SECRET"


@dataclass(frozen=True)
class DevIssuer:
    """The issuer, audience and shared secret the local authz service trusts."""

    issuer: str
    audience: str
    secret: str

    def settings_json(self) -> str:
        """The AUTHZ_JWT_ISSUERS value trusting this issuer (HS256 only)."""
        return json.dumps(
            [
                {
                    "issuer": self.issuer,
                    "audiences": [self.audience],
                    "algorithms": ["HS256"],
                    "hs256_secret": self.secret,
                }
            ]
        )

    def sign(
        self,
        *,
        roles: Sequence[str],
        customer: str | None,
        user: str = "dev-user",
        plan: str = "standard",
        trial: bool = False,
        ttl: int = 3600,
    ) -> str:
        return sign_dev_token(
            self.secret,
            self.issuer,
            self.audience,
            sub=user,
            roles=roles,
            customer_id=customer or None,
            plan=plan,
            trial_mode=trial,
            ttl=ttl,
        )


def load_or_create(var_dir: Path) -> DevIssuer:
    """Read var/dev-issuer.json, creating it (mode 0600) with a fresh secret on first run."""
    path = var_dir / KEY_FILE
    if not os.environ.get(SECRET_ENV) and not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        body = {"issuer": DEV_ISSUER, "audience": DEV_AUDIENCE, "secret": secrets.token_urlsafe(48)}
        # O_EXCL: two first runs at once never overwrite each other's secret
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(body, handle)
    return load(var_dir)


def load(var_dir: Path) -> DevIssuer:
    """The dev issuer ($GATEWAY_DEV_JWT_SECRET, else var/'s file; missing: run `make up`)."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return DevIssuer(issuer=DEV_ISSUER, audience=DEV_AUDIENCE, secret=from_env)
    path = var_dir / KEY_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{path}: no development key yet; `make up` creates it on its first run"
        ) from exc
    return DevIssuer(issuer=raw["issuer"], audience=raw["audience"], secret=raw["secret"])
