"""Embedded short-lived store for a single process (development, tests, one-box installs).

State lives in a dict guarded by one lock, so every operation is atomic with
respect to the others, which is what gives ``consume``/``add``/``incr`` the same
guarantees as the Redis backend.  It is not shared between processes: run the
Redis backend as soon as there is more than one worker.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sso.storage.base import storage_key

# A full sweep is O(n); doing it every N writes keeps its amortised cost per
# write constant while still bounding memory held by entries nobody reads again.
SWEEP_EVERY = 256


@dataclass
class _Entry:
    expires_at: float
    # JSON text for plain values (so callers never share mutable objects, as
    # with Redis), int for counters, set[str] for sets.
    value: str | int | set[str]


def _check_ttl(ttl: int) -> None:
    # Every entry must expire; Redis rejects non-positive TTLs too, so reject
    # them here with the same rule rather than silently storing forever.
    if ttl < 1:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")


class MemoryStore:
    """``ShortLivedStore`` backed by a process-local dict."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # monotonic: wall-clock jumps (NTP, DST) must not expire or revive entries.
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, _Entry] = {}
        self._writes = 0

    # -- internal helpers (call with the lock held) ---------------------------

    def _live(self, skey: str, now: float) -> _Entry | None:
        entry = self._data.get(skey)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._data[skey]
            return None
        return entry

    def _wrote(self, now: float) -> None:
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            expired = [k for k, e in self._data.items() if e.expires_at <= now]
            for k in expired:
                del self._data[k]

    def _store(self, skey: str, value: str | int | set[str], ttl: int, now: float) -> None:
        self._data[skey] = _Entry(now + ttl, value)
        self._wrote(now)

    @staticmethod
    def _load(entry: _Entry | None) -> dict[str, Any] | None:
        if entry is None or not isinstance(entry.value, str):
            return None
        loaded: dict[str, Any] = json.loads(entry.value)
        return loaded

    # -- ShortLivedStore ------------------------------------------------------

    def put(self, kind: str, key: str, value: dict[str, Any], ttl: int) -> None:
        _check_ttl(ttl)
        # Serialise outside the lock: it can be slow and needs no shared state.
        payload = json.dumps(value)
        skey = storage_key(kind, key)
        with self._lock:
            self._store(skey, payload, ttl, self._clock())

    def replace(self, kind: str, key: str, value: dict[str, Any], ttl: int) -> bool:
        _check_ttl(ttl)
        payload = json.dumps(value)
        skey = storage_key(kind, key)
        with self._lock:
            now = self._clock()
            entry = self._live(skey, now)
            if entry is None:
                return False
            self._store(skey, payload, ttl, now)
            return True

    def replace_and_put(
        self, kind: str, key: str, value: dict[str, Any], ttl: int, put: tuple[str, str, dict[str, Any], int]
    ) -> bool:
        return self._if_present_put(kind, key, json.dumps(value), ttl, put)

    def touch_and_put(self, kind: str, key: str, ttl: int, put: tuple[str, str, dict[str, Any], int]) -> bool:
        return self._if_present_put(kind, key, None, ttl, put)

    def _if_present_put(
        self, kind: str, key: str, payload: str | None, ttl: int, put: tuple[str, str, dict[str, Any], int]
    ) -> bool:
        """The entry's new value (None: only its TTL) and the other entry, both or neither."""
        put_kind, put_key, put_value, put_ttl = put
        _check_ttl(ttl)
        _check_ttl(put_ttl)
        put_payload = json.dumps(put_value)
        skey, put_skey = storage_key(kind, key), storage_key(put_kind, put_key)
        with self._lock:
            now = self._clock()
            entry = self._live(skey, now)
            if entry is None:
                return False
            if payload is None:
                entry.expires_at = now + ttl
            else:
                self._store(skey, payload, ttl, now)
            self._store(put_skey, put_payload, put_ttl, now)
            return True

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        skey = storage_key(kind, key)
        with self._lock:
            entry = self._live(skey, self._clock())
        return self._load(entry)

    def consume(self, kind: str, key: str) -> dict[str, Any] | None:
        skey = storage_key(kind, key)
        with self._lock:
            entry = self._live(skey, self._clock())
            if entry is not None:
                del self._data[skey]
        return self._load(entry)

    def delete(self, kind: str, key: str) -> None:
        with self._lock:
            self._data.pop(storage_key(kind, key), None)

    def delete_many(self, entries: Iterable[tuple[str, str]]) -> None:
        skeys = [storage_key(kind, key) for kind, key in entries]
        with self._lock:
            for skey in skeys:
                self._data.pop(skey, None)

    def run_script(self, script: str, entries: Sequence[tuple[str, str] | None], args: Sequence[Any]) -> Any:
        """No Lua here: nothing is run, and the caller goes step by step (see the protocol)."""
        return None

    def add(self, kind: str, key: str, value: dict[str, Any], ttl: int) -> bool:
        _check_ttl(ttl)
        payload = json.dumps(value)
        skey = storage_key(kind, key)
        with self._lock:
            now = self._clock()
            if self._live(skey, now) is not None:
                return False
            self._store(skey, payload, ttl, now)
            return True

    def touch(self, kind: str, key: str, ttl: int) -> bool:
        _check_ttl(ttl)
        skey = storage_key(kind, key)
        with self._lock:
            now = self._clock()
            entry = self._live(skey, now)
            if entry is None:
                return False
            entry.expires_at = now + ttl
            return True

    def incr(self, kind: str, key: str, ttl: int) -> int:
        _check_ttl(ttl)
        skey = storage_key(kind, key)
        with self._lock:
            now = self._clock()
            entry = self._live(skey, now)
            if entry is None or not isinstance(entry.value, int):
                # The TTL is fixed at creation: a rate-limit window must not
                # slide forward with every hit.
                self._store(skey, 1, ttl, now)
                return 1
            entry.value += 1
            return entry.value

    def set_add(self, kind: str, key: str, member: str, ttl: int) -> None:
        _check_ttl(ttl)
        skey = storage_key(kind, key)
        with self._lock:
            now = self._clock()
            entry = self._live(skey, now)
            members = entry.value if entry is not None and isinstance(entry.value, set) else set()
            members.add(member)
            self._store(skey, members, ttl, now)

    def set_members(self, kind: str, key: str) -> set[str]:
        skey = storage_key(kind, key)
        with self._lock:
            entry = self._live(skey, self._clock())
            if entry is None or not isinstance(entry.value, set):
                return set()
            # A copy: callers must not mutate the stored set behind the lock.
            return set(entry.value)

    def ping(self) -> None:
        """Always available: the data lives in this process."""
