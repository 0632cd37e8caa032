"""Persistence for the relay: one interface (:class:`Store`), SQLite by default."""

from .base import Store
from .sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "open_store"]


async def open_store(url: str) -> Store:
    """Open the store named by ``url`` (``sqlite:///path/to/relay.db``)."""
    if url.startswith("sqlite:///"):
        store = SQLiteStore(url.removeprefix("sqlite:///"))
        await store.open()
        return store
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")
