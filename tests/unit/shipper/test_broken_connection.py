"""A connection asyncpg reports broken is PostgreSQL away: dropped, retried, never an exit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest

from authz_service.shipper.join import Pair
from authz_service.shipper.model import SourceState
from authz_service.shipper.run import Shipper
from authz_service.shipper.settings import ShipperSettings


class BrokenStore:
    """The Store seam: every write fails the way a broken asyncpg connection does."""

    def __init__(self, error: Exception) -> None:
        self.error, self.dropped = error, 0

    async def write(
        self, pairs: Sequence[Pair], states: Sequence[SourceState], meanwhile: object = None
    ) -> int:
        raise self.error

    def drop(self) -> None:
        self.dropped += 1


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
        asyncpg.InterfaceError("another operation is in progress"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionResetError("connection reset by peer"),
        TimeoutError(),
    ],
    ids=["internal-client-state", "interface", "admin-shutdown", "reset", "timeout"],
)
async def test_a_broken_connection_is_dropped_and_the_batch_kept_for_retry(
    tmp_path: Path, error: Exception
) -> None:
    settings = ShipperSettings(database_url="postgresql://unused", journal_dir=tmp_path)
    shipper = Shipper(settings)
    store = BrokenStore(error)
    shipper.store = store  # type: ignore[assignment]
    assert await shipper._write([], []) is False  # not raised: the loop goes on
    assert store.dropped == 1
    status = shipper.status()
    assert (status["database"], status["healthy"]) == ("down", False)
    assert type(error).__name__ in status["last_error"]
