"""Hypothesis strategies for hostile bearer tokens: mutated valid tokens, signed odd headers and
claims, and raw segments in every encoding. Each case says what the verifier may do with it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.unit.authz.authz_helpers import AUDIENCE, HS_ISSUER, SECRET

# The verifier fixture's leeway: a claim within it of "now" may go either way.
LEEWAY_SECONDS = 5


@dataclass(frozen=True)
class TokenCase:
    """A token and the rule its verdict must follow."""

    token: str
    kind: str  # "mutated", "signed" or "raw"
    original: str = ""  # mutated: the valid token it came from (only that exact string passes)
    header: Any = None  # signed: what was signed, for the acceptance oracle
    claims: Any = None


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(header_segment: str, payload_segment: str, secret: str = SECRET) -> str:
    signing_input = f"{header_segment}.{payload_segment}".encode()
    return b64url(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())


def signed(header: Any, claims: Any, secret: str = SECRET) -> str:
    header_segment = b64url(json.dumps(header).encode())
    payload_segment = b64url(json.dumps(claims).encode())
    return f"{header_segment}.{payload_segment}.{hs256(header_segment, payload_segment, secret)}"


def valid_claims(now: int, **overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": HS_ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "nbf": now,
        # an hour: tables build their tokens at collection, minutes before they run
        "exp": now + 3600,
        "roles": ["customer"],
        "customer_id": "cust-1",
        "jti": "j-1",
    }
    claims.update(overrides)
    return claims


# --- 1. mutations of valid tokens: only the unchanged string may pass ------------------------

_ODD_CHARS = st.sampled_from("AaZz09-_=+/ .\t\n\x00é€\u2028")
_MUTATIONS = st.sampled_from(["insert", "delete", "replace", "pad", "alphabet", "bits", "segments",
                              "case", "whitespace"])  # fmt: skip
_PADDING = st.sampled_from(["=", "==", "===", "%3D"])
_SPACES = st.sampled_from([" ", "\t", "\r\n"])
_BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _mutation(token: str, draw: st.DrawFn) -> str:
    kind = draw(_MUTATIONS)
    position = draw(st.integers(0, max(0, len(token) - 1)))
    if kind == "insert":
        return token[:position] + draw(_ODD_CHARS) + token[position:]
    if kind == "delete":
        return token[:position] + token[position + 1 :]
    if kind == "replace":
        return token[:position] + draw(_ODD_CHARS) + token[position + 1 :]
    segments = token.split(".")
    index = position % len(segments)
    if kind == "pad":
        segments[index] += draw(_PADDING)
    elif kind == "alphabet":
        segments[index] = segments[index].replace("-", "+").replace("_", "/")
    elif kind == "bits":
        segments[index] = _other_spelling(segments[index], draw)
    elif kind == "segments":
        changed = [segments[:2], [*segments, ""], [segments[0], *segments]]
        segments = changed[position % len(changed)]
    elif kind == "case":
        segments[index] = segments[index].swapcase()
    else:
        segments[index] = draw(_SPACES) + segments[index]
    return ".".join(segments)


def _other_spelling(segment: str, draw: st.DrawFn) -> str:
    """The same bytes with non-zero trailing bits (when the length leaves any)."""
    spare_bits = {2: 4, 3: 2}.get(len(segment) % 4, 0)
    if spare_bits == 0 or segment[-1:] not in _BASE64URL:
        return segment + "A"
    value = _BASE64URL.index(segment[-1]) | draw(st.integers(1, (1 << spare_bits) - 1))
    return segment[:-1] + _BASE64URL[value]


@st.composite
def mutated_tokens(draw: st.DrawFn, pool: st.SearchStrategy[str]) -> TokenCase:
    original = draw(pool)
    token = original
    for _ in range(draw(st.integers(1, 3))):
        token = _mutation(token, draw)
    return TokenCase(token, "mutated", original=original)


# --- 2. correctly signed headers and claims, odd values included -----------------------------

_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_header_params = st.sampled_from(["alg", "kid", "typ", "crit", "b64", "cty", "jku", "jwk", "zip"])
_claim_names = st.sampled_from(["iss", "aud", "sub", "exp", "nbf", "iat", "roles", "customer_id",
                                "plan", "trial_mode", "trial_ends_at", "jti"])  # fmt: skip
_odd_identity = st.sampled_from(["", " user", "user ", "a\r\nx-admin: 1", "a\x00b", "\ud800",
                                 "x" * 300, "admin,customer", "a b", "é", "cust-acme"])  # fmt: skip
_odd_time = st.sampled_from([10**400, 1e308, -1, 0, True, "2030-01-01T00:00:00Z",
                             "2030-01-01T00:00:00", "soon", 2**63, 9e18])  # fmt: skip
_DROP = object()
_header_names = st.lists(_header_params, max_size=3, unique=True)
_header_values = _json | st.sampled_from([[], ["b64"], ["exp"], "HS256", False, 123])
_claim_list = st.lists(_claim_names, max_size=3, unique=True)
_claim_values = st.just(_DROP) | _json | _odd_identity | _odd_time
_role_lists = st.lists(_odd_identity | st.just("viewer"), max_size=3)


@st.composite
def signed_tokens(draw: st.DrawFn) -> TokenCase:
    now = int(time.time())
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    for name in draw(_header_names):
        header[name] = draw(_header_values)
    claims: dict[str, Any] = valid_claims(now)
    for name in draw(_claim_list):
        value = draw(_claim_values)
        if value is _DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    if draw(st.booleans()):
        claims["roles"] = draw(_role_lists)
    payload: Any = claims if draw(st.integers(0, 9)) else draw(_json)
    return TokenCase(signed(header, payload), "signed", header=header, claims=payload)


# --- 3. raw segments: non-JSON, non-UTF-8, deep, duplicated, padded, other alphabets ----------

_ENCODERS: list[Callable[[bytes], str]] = [
    b64url,
    lambda raw: base64.urlsafe_b64encode(raw).decode(),  # padded
    lambda raw: base64.b64encode(raw).decode(),  # standard alphabet
    lambda raw: raw.hex(),
    lambda raw: raw.decode("latin-1"),
]
_ENCODER = st.sampled_from(_ENCODERS)
_SEGMENT_COUNTS = st.sampled_from([1, 2, 3, 3, 3, 4, 5])
_ODD_DOCUMENTS = [
    b'{"alg":"HS256","alg":"none"}',
    b'{"alg":"HS256","kid":1}',
    b"[]",
    b"{}",
    b'{"alg":NaN}',
    b"[" * 1100 + b"]" * 1100,  # deeper than json's recursion limit
    '{"alg":"HS256"}'.encode("utf-16"),
    b"\xef\xbb\xbf{}",
    b'{"alg":"\\ud800"}',
    b'{"iss":"https://dev.test","iss":"https://dev.test"}',
]
_raw_documents = st.binary(max_size=40) | st.sampled_from(_ODD_DOCUMENTS)


@st.composite
def raw_tokens(draw: st.DrawFn) -> TokenCase:
    count = draw(_SEGMENT_COUNTS)
    segments = [draw(_ENCODER)(draw(_raw_documents)) for _ in range(count)]
    if count == 3 and draw(st.booleans()):
        segments[2] = hs256(segments[0], segments[1])  # a real signature over junk
    return TokenCase(".".join(segments), "raw")


def token_cases(pool: list[str]) -> st.SearchStrategy[TokenCase]:
    return st.one_of(mutated_tokens(st.sampled_from(pool)), signed_tokens(), raw_tokens())
