"""Alembic environment: runs the migrations online against $AUTHZ_DATABASE_URL via psycopg 3."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if config.config_file_name and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """`-x url=...` wins over $AUTHZ_DATABASE_URL; plain postgresql:// URLs use psycopg 3."""
    url = (
        config.attributes.get("database_url")  # set by tests calling alembic.command
        or context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("AUTHZ_DATABASE_URL", "")
    )
    if not url:
        raise SystemExit("alembic: set AUTHZ_DATABASE_URL (or pass -x url=postgresql://...)")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("alembic: offline (--sql) mode is not supported; run against a database")
run_migrations_online()
