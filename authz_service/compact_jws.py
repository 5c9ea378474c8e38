"""Strict reading of a compact JWS (RFC 7515 §7.1) before any key lookup or signature check.

PyJWT verifies the signature and the registered claims afterwards; this module refuses what
PyJWT is lenient about or what the service must not act on: anything but three canonical
base64url segments (no padding, no whitespace, no `+`/`/`, no stray trailing bits), JSON that is
not a plain object (duplicate names, NaN, nesting too deep for the parser, invalid UTF-8), and
header parameters the service does not understand but would be required to (`crit`, `b64`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

# Only the base64url alphabet: `=`, `+`, `/` and whitespace never match. An empty segment
# decodes to no bytes: no JSON for a header or payload, and the signature of an unsecured
# (`alg: none`) token, which the algorithm check refuses.
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)


class MalformedTokenError(ValueError):
    """The token is not a well-formed compact JWS; the message is safe to show the client."""


@dataclass(frozen=True, slots=True)
class CompactJws:
    """The decoded JOSE header and claims of a well-formed (not yet verified) token."""

    header: dict[str, Any]
    claims: dict[str, Any]


def parse_compact_jws(token: str) -> CompactJws:
    """Decode and check a compact JWS's structure; raise MalformedTokenError naming the part."""
    segments = token.split(".")
    if len(segments) != 3:
        raise MalformedTokenError("a token has exactly three dot-separated segments")
    header_segment, payload_segment, signature_segment = segments
    header = _json_object(_canonical_base64url(header_segment, "header"), "header")
    claims = _json_object(_canonical_base64url(payload_segment, "payload"), "payload")
    _canonical_base64url(signature_segment, "signature")
    _check_header(header)
    return CompactJws(header, claims)


def _canonical_base64url(segment: str, part: str) -> bytes:
    """The bytes of a segment in the one encoding RFC 7515 §2 allows for them."""
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise MalformedTokenError(f"the {part} is not base64url without padding")
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedTokenError(f"the {part} is not base64url without padding") from exc
    # non-zero trailing bits decode to the same bytes: a second spelling of one token
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode("ascii"):
        raise MalformedTokenError(f"the {part} is not canonical base64url")
    return decoded


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            # RFC 7515 §4 / RFC 7519 §4: parsers may not pick one of two values silently
            raise MalformedTokenError(f"duplicate member {name[:32]!r}")
        result[name] = value
    return result


def _no_constant(name: str) -> Any:
    raise MalformedTokenError(f"{name} is not JSON")


def _json_object(data: bytes, part: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_unique_names, parse_constant=_no_constant)
    except MalformedTokenError as exc:
        raise MalformedTokenError(f"the {part} is invalid: {exc}") from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedTokenError(f"the {part} is not UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise MalformedTokenError(f"the {part} is not a JSON object")
    return value


def _check_header(header: dict[str, Any]) -> None:
    """RFC 7515 §4.1.11: every name in `crit` must be understood, and this service implements
    no extension, so any `crit` is refused; `b64` (RFC 7797) changes what is signed."""
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise MalformedTokenError("the header's alg is not a string")
    if "kid" in header and not isinstance(header["kid"], str):
        raise MalformedTokenError("the header's kid is not a string")
    if "typ" in header and not isinstance(header["typ"], str):
        raise MalformedTokenError("the header's typ is not a string")
    if "crit" in header:
        crit = header["crit"]
        if not isinstance(crit, list) or not crit or not all(isinstance(n, str) for n in crit):
            raise MalformedTokenError("the header's crit is not a non-empty list of names")
        raise MalformedTokenError(f"critical header extension {crit[0][:32]!r} is not supported")
    if "b64" in header:
        raise MalformedTokenError("unencoded payloads (b64) are not supported")
