"""Redis backend of the short-lived store, shared by every worker in production.

Needs Redis >= 6.2 (GETDEL).  Any failure to talk to Redis surfaces as
``StoreUnavailable`` so callers fail closed; the connection pool reconnects on
its own once Redis is back, so the same instance can be kept for the process
lifetime.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

from sso.storage.base import StoreUnavailable, storage_key

T = TypeVar("T")

# INCR and "set the TTL only if the key has none" in one atomic step.  A script
# rather than EXPIRE NX keeps us compatible with Redis 6.2; checking for a
# missing TTL (rather than n == 1) also repairs a counter that somehow lost it.
_INCR_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) == -1 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return n
"""

# The session's write-back and the code it was issued, both or neither, in one round
# trip: SET ... XX (or EXPIRE) of KEYS[1], and only if that found the key, SET of
# KEYS[2].  A logout's DEL lands before (nothing stored) or after (it finds the session).
_REPLACE_AND_PUT_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'XX') then
    redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
    return 1
end
return 0
"""
_TOUCH_AND_PUT_SCRIPT = """
if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 1 then
    redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
    return 1
end
return 0
"""


def _check_ttl(ttl: int) -> None:
    # Reject bad TTLs before Redis does, so a programming error is not
    # reported as an outage (StoreUnavailable).
    if ttl < 1:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")


def _load(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    loaded: dict[str, Any] = json.loads(raw)
    return loaded


class RedisStore:
    """``ShortLivedStore`` on Redis via a redis-py connection pool."""

    def __init__(self, url: str, *, socket_timeout: float = 1.0, prefix: str = "") -> None:
        self._prefix = prefix
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            # PING connections idle for longer than this before reuse, so one
            # left broken by a Redis restart is replaced rather than failing.
            health_check_interval=15,
            # redis-py's default (10 retries, backoff up to 1 s) would hold a
            # request for seconds during an outage.  One immediate retry on a
            # connection error transparently replaces a stale pooled socket;
            # timeouts are not retried so an unresponsive Redis fails within
            # socket_timeout.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        # redis-py's Script re-sends the source on NOSCRIPT, so a restarted
        # (empty) Redis is handled without caching anything here.
        self._incr_script = self._client.register_script(_INCR_SCRIPT)
        self._replace_and_put_script = self._client.register_script(_REPLACE_AND_PUT_SCRIPT)
        self._touch_and_put_script = self._client.register_script(_TOUCH_AND_PUT_SCRIPT)
        # Callers' scripts (run_script), registered on first use, by source text.
        self._scripts: dict[str, Any] = {}

    def _key(self, kind: str, key: str) -> str:
        return self._prefix + storage_key(kind, key)

    def _call(self, op: Callable[[redis.Redis], T]) -> T:
        """Run ``op`` against the client: the single place redis errors become ours."""
        try:
            return op(self._client)
        except (RedisError, OSError) as exc:
            # RedisError covers ConnectionError/TimeoutError/ResponseError;
            # OSError guards against socket errors redis-py did not wrap.
            raise StoreUnavailable(f"redis: {exc}") from exc

    # -- ShortLivedStore ------------------------------------------------------

    def put(self, kind: str, key: str, value: dict[str, Any], ttl: int) -> None:
        _check_ttl(ttl)
        skey, payload = self._key(kind, key), json.dumps(value)
        self._call(lambda r: r.set(skey, payload, ex=ttl))

    def replace(self, kind: str, key: str, value: dict[str, Any], ttl: int) -> bool:
        _check_ttl(ttl)
        skey, payload = self._key(kind, key), json.dumps(value)
        # SET XX replies OK when it stored and nil when the key was absent: one command,
        # so a DEL in between cannot be undone.
        return bool(self._call(lambda r: r.set(skey, payload, ex=ttl, xx=True)))

    def replace_and_put(
        self, kind: str, key: str, value: dict[str, Any], ttl: int, put: tuple[str, str, dict[str, Any], int]
    ) -> bool:
        put_kind, put_key, put_value, put_ttl = put
        _check_ttl(ttl)
        _check_ttl(put_ttl)
        keys = [self._key(kind, key), self._key(put_kind, put_key)]
        args = [json.dumps(value), ttl, json.dumps(put_value), put_ttl]
        return bool(self._call(lambda r: self._replace_and_put_script(keys=keys, args=args, client=r)))

    def touch_and_put(self, kind: str, key: str, ttl: int, put: tuple[str, str, dict[str, Any], int]) -> bool:
        put_kind, put_key, put_value, put_ttl = put
        _check_ttl(ttl)
        _check_ttl(put_ttl)
        keys = [self._key(kind, key), self._key(put_kind, put_key)]
        args = [ttl, json.dumps(put_value), put_ttl]
        return bool(self._call(lambda r: self._touch_and_put_script(keys=keys, args=args, client=r)))

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        skey = self._key(kind, key)
        return _load(self._call(lambda r: r.get(skey)))

    def consume(self, kind: str, key: str) -> dict[str, Any] | None:
        skey = self._key(kind, key)
        # GETDEL is a single command, hence atomic: one caller wins.
        return _load(self._call(lambda r: r.getdel(skey)))

    def delete(self, kind: str, key: str) -> None:
        skey = self._key(kind, key)
        self._call(lambda r: r.delete(skey))

    def delete_many(self, entries: Iterable[tuple[str, str]]) -> None:
        skeys = [self._key(kind, key) for kind, key in entries]
        if skeys:
            self._call(lambda r: r.delete(*skeys))  # one DEL

    def run_script(self, script: str, entries: Sequence[tuple[str, str] | None], args: Sequence[Any]) -> Any:
        registered = self._scripts.get(script)
        if registered is None:
            # redis-py's Script sends EVALSHA and loads the source on NOSCRIPT (a restarted Redis).
            registered = self._scripts[script] = self._client.register_script(script)
        keys = ["" if entry is None else self._key(*entry) for entry in entries]
        return self._call(lambda r: registered(keys=keys, args=list(args), client=r))

    def add(self, kind: str, key: str, value: dict[str, Any], ttl: int) -> bool:
        _check_ttl(ttl)
        skey, payload = self._key(kind, key), json.dumps(value)
        # SET NX replies OK when it stored and nil when the key existed.
        return bool(self._call(lambda r: r.set(skey, payload, ex=ttl, nx=True)))

    def touch(self, kind: str, key: str, ttl: int) -> bool:
        _check_ttl(ttl)
        skey = self._key(kind, key)
        return bool(self._call(lambda r: r.expire(skey, ttl)))

    def incr(self, kind: str, key: str, ttl: int) -> int:
        _check_ttl(ttl)
        skey = self._key(kind, key)
        return int(self._call(lambda r: self._incr_script(keys=[skey], args=[ttl], client=r)))

    def set_add(self, kind: str, key: str, member: str, ttl: int) -> None:
        _check_ttl(ttl)
        skey = self._key(kind, key)

        def op(r: redis.Redis) -> None:
            # MULTI/EXEC: a set never exists without its TTL.
            pipe = r.pipeline(transaction=True)
            pipe.sadd(skey, member)
            pipe.expire(skey, ttl)
            pipe.execute()

        self._call(op)

    def set_members(self, kind: str, key: str) -> set[str]:
        skey = self._key(kind, key)
        return {str(m) for m in self._call(lambda r: r.smembers(skey))}

    def ping(self) -> None:
        self._call(lambda r: r.ping())

    def close(self) -> None:
        """Release pooled connections (process shutdown, tests)."""
        self._client.close()
