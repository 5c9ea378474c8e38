"""The hash chain: each half of a row hashed over a canonical form PostgreSQL's values reproduce.

A half (the decision, or Envoy's completion) is hashed over its key, the shared facts, its own
columns, its chain id, its sequence number and the previous record's hash. The canonical form
turns every value into what both the writer's Python values and what asyncpg returns for the
stored column map to exactly: timestamps as integer microseconds, addresses as packed bytes,
JSON numbers as normalised decimals (jsonb keeps numbers as numeric), tagged JSON scalars.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from authz_service.audit.columns import CHAIN_COLUMNS, Half, Kind, hashed_columns

GENESIS = "0" * 64
VERSION = "gateway-audit-chain/1"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(value: datetime) -> int:
    """Microseconds since the epoch, exact (a naive datetime is UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def _timestamp(value: Any) -> int:
    if isinstance(value, datetime):
        return micros(value)
    if isinstance(value, str):
        return micros(datetime.fromisoformat(value))
    return int(value)


def _address(value: Any) -> str:
    """Packed bytes in hex: independent of how a Python version or PostgreSQL spells it."""
    address = getattr(value, "ip", value)  # asyncpg gives an interface when a netmask is set
    return _packed(str(address))


@functools.lru_cache(maxsize=4096)  # a few client addresses send most requests
def _packed(text: str) -> str:
    return ipaddress.ip_address(text).packed.hex()


def _number(value: int | float) -> str:
    """jsonb stores numeric: 1e2, 100 and 100.0 come back alike, so they hash alike."""
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return "n:" + str(number.normalize() if number else Decimal(0))


def canonical_json(value: Any) -> Any:
    """Tagged, normalised JSON: strings and numbers cannot be mistaken for each other."""
    if isinstance(value, str):
        return "s:" + value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, dict):
        return {str(k): canonical_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_json(v) for v in value]
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _text_list(value: Any) -> list[str | None]:
    return [None if item is None else str(item) for item in value]


_CONVERT: dict[Kind, Callable[[Any], Any] | None] = {
    "text": None,  # stored as it is (the cleaner made it storable first)
    "int": int,
    "float": float,
    "bool": bool,
    "ts": _timestamp,
    "inet": _address,
    "json": canonical_json,
    "text[]": _text_list,
}
_PLANS: dict[Half, tuple[tuple[str, Callable[[Any], Any] | None], ...]] = {
    half: tuple((name, _CONVERT[kind]) for name, kind in hashed_columns(half))
    for half in ("decision", "completion")
}


def canonical_values(half: Half, row: Mapping[str, Any]) -> list[Any]:
    values = []
    for name, convert in _PLANS[half]:
        value = row.get(name)
        values.append(value if value is None or convert is None else convert(value))
    return values


def record_hash(half: Half, row: Mapping[str, Any], chain_id: str, seq: int, prev: str) -> str:
    """sha256 over the canonical form of `row`'s half, linked to the previous record."""
    payload = [VERSION, half, chain_id, seq, prev, canonical_values(half, row)]
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class Chain:
    """One chain (a journal, or an access-log stream): links each record to the one before."""

    half: Half
    chain_id: str
    seq: int = 0
    last_hash: str = GENESIS

    def link(self, row: dict[str, Any]) -> None:
        """Set the row's chain columns (id, seq, previous hash, own hash) and advance."""
        seq = self.seq + 1
        digest = record_hash(self.half, row, self.chain_id, seq, self.last_hash)
        id_column, seq_column, prev_column, hash_column = CHAIN_COLUMNS[self.half]
        row[id_column] = self.chain_id
        row[seq_column] = seq
        row[prev_column] = self.last_hash
        row[hash_column] = digest
        self.seq, self.last_hash = seq, digest
