"""Run the backend: python -m backend --port 8091 (or env BACKEND_PORT, BACKEND_DATABASE_URL)."""

from __future__ import annotations

import argparse
import os

from aiohttp import web

from backend.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="the reference backend")
    parser.add_argument("--host", default=os.environ.get("BACKEND_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("BACKEND_PORT", "8091")))
    parser.add_argument("--database-url", default=os.environ.get("BACKEND_DATABASE_URL", ""))
    args = parser.parse_args()
    web.run_app(
        create_app(args.database_url),
        host=args.host,
        port=args.port,
        access_log=None,
        print=lambda message: print(message, flush=True),
    )


if __name__ == "__main__":
    main()
