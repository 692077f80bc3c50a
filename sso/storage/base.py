"""The short-lived store protocol: codes, sessions, counters, replay caches.

Every backend stores values under a *hash* of the caller's key (model: fosite
stores token signatures), so a dump of Redis never yields a usable token.
Values are JSON-serialisable dicts.  Every entry has a TTL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class StoreUnavailable(Exception):
    """The backing service cannot be reached: callers fail closed (503)."""


def storage_key(kind: str, key: str) -> str:
    """The key a backend actually stores: namespace plus SHA-256 of the caller's key."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"sso:{kind}:{digest}"


class ShortLivedStore(Protocol):
    """One small protocol, implemented by the Redis and the embedded backends.

    ``kind`` is a short namespace (``code``, ``session``, ``jti`` ...); ``key`` is
    the caller's identifier (often a token) and is hashed before storage.
    """

    def put(self, kind: str, key: str, value: dict[str, Any], ttl: int) -> None:
        """Store ``value`` for ``ttl`` seconds, replacing any previous value."""

    def replace(self, kind: str, key: str, value: dict[str, Any], ttl: int) -> bool:
        """Store ``value`` for ``ttl`` seconds only if the entry exists (atomic). False when absent.

        A write-back that must not bring back an entry deleted meanwhile (a session
        ended by a logout between its read and its write).
        """

    def replace_and_put(
        self, kind: str, key: str, value: dict[str, Any], ttl: int, put: tuple[str, str, dict[str, Any], int]
    ) -> bool:
        """:meth:`replace`, and only if that stored, :meth:`put` of ``put`` (kind, key, value, ttl).

        Atomic, one round trip: the session's write-back with the code it was issued, so
        a code is never stored for a session that ended in between. False: nothing stored.
        """

    def touch_and_put(self, kind: str, key: str, ttl: int, put: tuple[str, str, dict[str, Any], int]) -> bool:
        """:meth:`touch`, and only if the entry exists, :meth:`put` of ``put``; atomic (as above)."""

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The value, or None when absent or expired."""

    def consume(self, kind: str, key: str) -> dict[str, Any] | None:
        """Atomically read and delete: of N concurrent callers exactly one gets the value."""

    def delete(self, kind: str, key: str) -> None:
        """Remove the entry; absent entries are fine."""

    def delete_many(self, entries: Iterable[tuple[str, str]]) -> None:
        """Remove every ``(kind, key)`` entry, in one step (one round trip); absent entries are fine."""

    def run_script(self, script: str, entries: Sequence[tuple[str, str] | None], args: Sequence[Any]) -> Any:
        """Run a Redis Lua ``script`` atomically, in one round trip; None where there is no Redis.

        ``KEYS[i]`` is the stored key of ``entries[i]`` (an empty string for None,
        so a script can tell an entry that is not there), ``ARGV`` is ``args``; the
        values it reads and writes are the store's own (JSON text, counters), and
        its reply is Redis's.  A backend without Lua (the embedded store) runs
        nothing and returns None: the caller then does the same steps one by one
        through the methods above.  The script must not return nil.
        """

    def add(self, kind: str, key: str, value: dict[str, Any], ttl: int) -> bool:
        """Store only if absent (atomic). True when this call stored it (jti replay caches)."""

    def touch(self, kind: str, key: str, ttl: int) -> bool:
        """Reset the TTL of an existing entry. False when absent."""

    def incr(self, kind: str, key: str, ttl: int) -> int:
        """Atomically increment a counter; the TTL is set when the counter is created."""

    def set_add(self, kind: str, key: str, member: str, ttl: int) -> None:
        """Add a member to a set and (re)set the set's TTL."""

    def set_members(self, kind: str, key: str) -> set[str]:
        """Members of a set (empty when absent)."""

    def ping(self) -> None:
        """Raise StoreUnavailable when the backend cannot serve requests."""
