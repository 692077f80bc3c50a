"""Short-lived state: authorization codes, sessions, counters, replay caches.

This package owns everything that lives for seconds to hours and may be lost
without harm beyond a re-login: the ``ShortLivedStore`` protocol, its Redis
backend (production, shared by all workers) and its embedded in-memory backend
(one process: development, tests), and the choice between them.  Durable data
(accounts, clients, consents) is not kept here.

Keys are stored as SHA-256 hashes of the caller's key, every entry has a TTL,
and a backend that cannot be reached raises ``StoreUnavailable`` so callers
fail closed.
"""

from __future__ import annotations

from sso.storage.base import ShortLivedStore, StoreUnavailable, storage_key
from sso.storage.memory import MemoryStore
from sso.storage.redis import RedisStore

__all__ = [
    "MemoryStore",
    "RedisStore",
    "ShortLivedStore",
    "StoreUnavailable",
    "create_store",
    "storage_key",
]


def create_store(redis_url: str | None) -> ShortLivedStore:
    """Redis when a URL is configured, otherwise the single-process memory store."""
    if redis_url:
        return RedisStore(redis_url)
    return MemoryStore()
