"""The decision core: pure functions and values. No I/O, no clock, no asyncio, redis or aiohttp
(ruff's banned-api enforces it, callgate/core/ruff.toml)."""
