"""The reference backend: a small aiohttp API that echoes the identity headers it receives."""
