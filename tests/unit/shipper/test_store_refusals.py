"""The shipper's one test of a PostgreSQL error: a row's data refused, or the database away."""

from __future__ import annotations

import asyncpg
import pytest

from authz_service.shipper.store import WRITE_ONCE_REFUSAL, RowsRefusedError, refused_rows


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.StringDataRightTruncationError("value too long"),  # 22001
        asyncpg.UniqueViolationError("duplicate key"),  # 23505
        asyncpg.ProgramLimitExceededError("index row too big"),  # 54000
        asyncpg.InsufficientPrivilegeError(f"{WRITE_ONCE_REFUSAL}: decision of r1"),  # 42501
    ],
)
def test_a_refused_row_is_raised_as_such_with_postgres_reason(error: Exception) -> None:
    with pytest.raises(RowsRefusedError, match=str(error)) as raised, refused_rows():
        raise error
    assert raised.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InsufficientPrivilegeError("permission denied for table gateway_audit"),
        asyncpg.UndefinedTableError("relation does not exist"),  # a missing migration
        asyncpg.AdminShutdownError("terminating connection"),
        OSError("connection refused"),
    ],
)
def test_every_other_error_passes_unchanged(error: Exception) -> None:
    with pytest.raises(type(error)) as raised, refused_rows():
        raise error
    assert raised.value is error
