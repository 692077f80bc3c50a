"""One conformance suite run against MemoryStore (fake clock) and RedisStore (real
server, random key prefix per test), so both backends keep exactly the same contract."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import pytest
import redis

from sso.storage import MemoryStore, RedisStore, ShortLivedStore, create_store, storage_key
from tests.backends import REDIS_BASE

# Database 15 of the test Redis (SSO_TEST_REDIS, as every Redis-backed test); each test
# keeps to its own random key prefix.
REDIS_URL = f"{REDIS_BASE}/15"
T = TypeVar("T")


def unavailable(reason: str) -> NoReturn:
    # A missing service is a skip on a laptop but a hard failure in CI, where
    # a silently skipped backend would hide regressions.
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class FakeClock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def redis_url() -> str:
    # Probe once per session so an absent server costs one timeout, not one per test.
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[RedisStore]:
    prefix = f"test:{uuid.uuid4().hex}:"
    backend = RedisStore(redis_url, prefix=prefix)
    try:
        yield backend
    finally:
        for k in backend._client.scan_iter(match=f"{prefix}*"):
            backend._client.delete(k)
        backend.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> ShortLivedStore:
    if request.param == "memory":
        return MemoryStore(clock=FakeClock())
    return request.getfixturevalue("redis_store")  # type: ignore[no-any-return]


def advance(store: ShortLivedStore, seconds: float) -> None:
    """Let ``seconds`` pass for the backend: fake clock for memory, real time for Redis."""
    if isinstance(store, MemoryStore):
        store._clock.now += seconds  # type: ignore[attr-defined]
    else:
        time.sleep(seconds)


def stored_keys(store: ShortLivedStore, pattern: str | None = None) -> list[str]:
    """Keys the backend holds: this test's own, or for Redis the whole DB matching pattern."""
    if isinstance(store, MemoryStore):
        return list(store._data)
    assert isinstance(store, RedisStore)
    return list(store._client.scan_iter(match=pattern or f"{store._prefix}*"))


def concurrently(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run fn(0..n-1) on n threads released together by a barrier to maximise contention."""
    barrier = threading.Barrier(n)

    def worker(i: int) -> T:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(worker, range(n)))


def test_put_get_roundtrip(store: ShortLivedStore) -> None:
    value: dict[str, Any] = {"sub": "u-1", "scopes": ["openid", "profile"], "n": 3, "ok": True}
    store.put("code", "abc", value, ttl=60)
    assert store.get("code", "abc") == value
    assert store.get("code", "missing") is None
    # Same key, other kind: namespaces do not collide.
    assert store.get("session", "abc") is None
    store.put("code", "abc", {"v": 2}, ttl=60)
    # Each read is a fresh copy: mutating it must not change what is stored.
    got = store.get("code", "abc")
    assert got == {"v": 2}
    got["v"] = 3
    assert store.get("code", "abc") == {"v": 2}


def test_chinese_text_roundtrips(store: ShortLivedStore) -> None:
    value = {"name": "张三", "org": "统一身份认证平台", "note": "登录成功 ✓"}
    store.put("session", "会话-1", value, ttl=60)
    assert store.get("session", "会话-1") == value


def test_entries_expire(store: ShortLivedStore) -> None:
    store.put("code", "c", {"v": 1}, ttl=1)
    assert store.add("jti", "j", {"v": 1}, ttl=1)
    store.set_add("sids", "u", "s1", ttl=1)
    advance(store, 1.2)
    assert store.get("code", "c") is None
    assert store.consume("code", "c") is None
    assert store.set_members("sids", "u") == set()
    assert store.touch("code", "c", ttl=60) is False
    # An expired replay-cache entry no longer blocks the key.
    assert store.add("jti", "j", {"v": 2}, ttl=60)


def test_touch_and_set_add_extend_ttl_incr_does_not(store: ShortLivedStore) -> None:
    assert store.touch("session", "missing", ttl=60) is False
    assert store.get("session", "missing") is None  # touch must not create
    store.put("session", "s", {"v": 1}, ttl=1)
    store.set_add("sids", "u", "s1", ttl=1)
    assert store.incr("rate", "k", ttl=1) == 1
    advance(store, 0.7)
    assert store.touch("session", "s", ttl=3) is True
    store.set_add("sids", "u", "s2", ttl=3)
    # A later hit must not slide (or widen) the rate-limit window fixed at creation.
    assert store.incr("rate", "k", ttl=60) == 2
    advance(store, 0.6)  # past the original 1 s expiry
    assert store.get("session", "s") == {"v": 1}
    assert store.set_members("sids", "u") == {"s1", "s2"}
    assert store.incr("rate", "k", ttl=60) == 1  # the old counter expired


def test_stored_key_is_hash_not_raw_key(store: ShortLivedStore) -> None:
    raw = f"raw-token-{uuid.uuid4().hex}"
    store.put("code", raw, {"v": 1}, ttl=60)
    assert store.add("jti", raw, {"v": 1}, ttl=60)
    store.incr("login-fail", raw, ttl=60)
    store.set_add("sids", raw, "member", ttl=60)
    keys = stored_keys(store)
    assert len(keys) == 4
    assert any(k.endswith(storage_key("code", raw)) for k in keys)
    assert not [k for k in keys if raw in k]
    # Redis: not under any prefix either, anywhere in the keyspace.
    assert not [k for k in stored_keys(store, f"*{raw}*") if raw in k]


def test_consume_returns_value_once_even_concurrently(store: ShortLivedStore) -> None:
    store.put("code", "c", {"sub": "u-1"}, ttl=60)
    assert store.consume("code", "c") == {"sub": "u-1"}
    assert store.consume("code", "c") is None
    assert store.get("code", "c") is None
    assert store.consume("code", "never-stored") is None
    # Authorization-code replay: of 32 racing redeemers exactly one may win.
    for round_ in range(3):
        store.put("code", f"c{round_}", {"round": round_}, ttl=60)
        results = concurrently(32, lambda _i, r=round_: store.consume("code", f"c{r}"))
        winners = [r for r in results if r is not None]
        assert winners == [{"round": round_}]


def test_add_only_when_absent_even_concurrently(store: ShortLivedStore) -> None:
    assert store.add("jti", "j", {"first": True}, ttl=60) is True
    assert store.add("jti", "j", {"first": False}, ttl=60) is False
    assert store.get("jti", "j") == {"first": True}
    results = concurrently(32, lambda i: store.add("jti", "shared", {"i": i}, ttl=60))
    assert results.count(True) == 1
    assert store.get("jti", "shared") == {"i": results.index(True)}


def test_incr_counts_atomically(store: ShortLivedStore) -> None:
    def hammer(_i: int) -> list[int]:
        return [store.incr("rate", "ip", ttl=60) for _ in range(25)]

    seen = [n for batch in concurrently(20, hammer) for n in batch]
    # Every increment observed a distinct value: no lost or duplicated updates.
    assert sorted(seen) == list(range(1, 501))
    assert store.incr("rate", "ip", ttl=60) == 501


def test_sets(store: ShortLivedStore) -> None:
    assert store.set_members("sids", "u") == set()
    store.set_add("sids", "u", "a", ttl=60)
    store.set_add("sids", "u", "b", ttl=60)
    store.set_add("sids", "u", "a", ttl=60)  # duplicates collapse
    store.set_add("sids", "u", "会话-1", ttl=60)
    members = store.set_members("sids", "u")
    assert members == {"a", "b", "会话-1"}
    members.add("mutated")  # a copy: the stored set is unchanged
    assert store.set_members("sids", "u") == {"a", "b", "会话-1"}


def test_delete_ping_and_ttl_validation(store: ShortLivedStore) -> None:
    store.delete("code", "absent")  # absent entries are fine
    store.put("code", "c", {"v": 1}, ttl=60)
    store.delete("code", "c")
    assert store.get("code", "c") is None
    store.ping()
    # Every entry must expire; a bad TTL is a caller bug, not an outage.
    for bad in (0, -1):
        with pytest.raises(ValueError):
            store.put("code", "c", {"v": 1}, ttl=bad)
        with pytest.raises(ValueError):
            store.incr("rate", "k", ttl=bad)


def test_memory_sweep_bounds_memory() -> None:
    clock = FakeClock()
    mem = MemoryStore(clock=clock)
    for i in range(100):
        mem.put("code", f"old{i}", {"i": i}, ttl=1)
    clock.now += 2
    # Nobody reads the old entries again; writes alone must reclaim them.
    for i in range(300):
        mem.put("code", f"new{i}", {"i": i}, ttl=60)
    assert len(mem._data) == 300


def test_create_store_picks_backend() -> None:
    assert isinstance(create_store(None), MemoryStore)
    assert isinstance(create_store(""), MemoryStore)
    redis_store = create_store(REDIS_URL)
    assert isinstance(redis_store, RedisStore)
    redis_store.close()  # construction must not need a reachable server


def test_replace_only_when_present_even_against_a_concurrent_delete(store: ShortLivedStore) -> None:
    # A session's write-back must not bring back a session a logout deleted meanwhile.
    assert store.replace("session", "absent", {"v": 1}, ttl=60) is False
    assert store.get("session", "absent") is None  # replace must not create
    store.put("session", "s", {"v": 1}, ttl=1)
    advance(store, 0.6)
    assert store.replace("session", "s", {"v": 2}, ttl=3) is True
    advance(store, 0.6)  # past the original 1 s expiry: the TTL was reset
    assert store.get("session", "s") == {"v": 2}
    store.delete("session", "s")
    assert store.replace("session", "s", {"v": 3}, ttl=60) is False
    assert store.get("session", "s") is None
    store.put("session", "e", {"v": 1}, ttl=1)
    advance(store, 1.2)
    assert store.replace("session", "e", {"v": 2}, ttl=60) is False  # expired counts as absent
    assert store.get("session", "e") is None
    with pytest.raises(ValueError):
        store.replace("session", "s", {"v": 1}, ttl=0)
    # Racing a delete: whatever the order, the entry never outlives the delete.
    for round_ in range(20):
        store.put("session", f"r{round_}", {"v": 0}, ttl=60)
        results = concurrently(
            9,
            lambda i, r=round_: (
                store.delete("session", f"r{r}") if i == 0 else store.replace("session", f"r{r}", {"v": i}, ttl=60)
            ),
        )
        assert store.get("session", f"r{round_}") is None, results


@pytest.mark.parametrize("op", ["replace_and_put", "touch_and_put"])
def test_the_session_write_back_with_its_code_stores_both_or_neither(store: ShortLivedStore, op: str) -> None:
    # The SSO hop stores the code it issued with the session's write-back: a session a
    # logout deleted meanwhile is not brought back, and its code is never stored.
    def write(key: str, code: str, ttl: int = 60) -> bool:
        entry = ("code", code, {"c": code}, 30)
        if op == "replace_and_put":
            return store.replace_and_put("session", key, {"v": code}, ttl, entry)
        return store.touch_and_put("session", key, ttl, entry)

    assert write("absent", "c0") is False
    assert store.get("session", "absent") is None and store.get("code", "c0") is None
    store.put("session", "s", {"v": "before"}, ttl=1)
    advance(store, 0.6)
    assert write("s", "c1", ttl=3) is True
    advance(store, 0.6)  # past the original 1 s expiry: the TTL was reset
    assert store.get("session", "s") == ({"v": "c1"} if op == "replace_and_put" else {"v": "before"})
    assert store.consume("code", "c1") == {"c": "c1"}
    store.put("session", "e", {"v": 1}, ttl=1)
    advance(store, 1.2)
    assert write("e", "c2") is False  # expired counts as absent
    assert store.get("session", "e") is None and store.get("code", "c2") is None
    with pytest.raises(ValueError):
        write("s", "c3", ttl=0)
    with pytest.raises(ValueError):
        store.touch_and_put("session", "s", 60, ("code", "c4", {}, 0))
    assert store.get("code", "c3") is None and store.get("code", "c4") is None
    # Racing a delete: whatever the order, the session never outlives the delete, and a
    # code exists only if its write-back found the session.
    for round_ in range(20):
        store.put("session", f"r{round_}", {"v": 0}, ttl=60)
        results = concurrently(
            9,
            lambda i, r=round_: store.delete("session", f"r{r}") if i == 0 else write(f"r{r}", f"r{r}-{i}"),
        )
        assert store.get("session", f"r{round_}") is None, results
        for i in range(1, 9):
            assert (store.get("code", f"r{round_}-{i}") is not None) is results[i], (i, results)


def test_delete_many_removes_every_entry_named_and_no_other(store: ShortLivedStore) -> None:
    store.put("code", "a", {"v": 1}, ttl=60)
    store.incr("rate", "a", ttl=60)
    store.put("code", "b", {"v": 2}, ttl=60)
    store.delete_many([("code", "a"), ("rate", "a"), ("code", "absent")])  # absent entries are fine
    assert store.get("code", "a") is None
    assert store.incr("rate", "a", ttl=60) == 1  # the counter starts afresh
    assert store.get("code", "b") == {"v": 2}
    store.delete_many([])  # nothing to do


@pytest.mark.redis
def test_delete_many_is_one_round_trip_on_redis(redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store = redis_store
    store.put("code", "a", {"v": 1}, ttl=60)
    sent: list[tuple[Any, ...]] = []
    real = store._client.execute_command

    def execute_command(*args: Any, **options: Any) -> Any:
        sent.append(args)
        return real(*args, **options)

    monkeypatch.setattr(store._client, "execute_command", execute_command)
    store.delete_many([("code", "a"), ("rate", "a")])
    assert [args[0] for args in sent] == ["DEL"] and len(sent[0]) == 3


# Reads an entry, counts another, writes a third (the value and TTL from ARGV), and
# tells an absent entry (None: an empty KEYS[i]) from a present one.
_SCRIPT = """
local seen = redis.call('GET', KEYS[1]) or false
local n = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[2])
return {seen or '', n, KEYS[4] == '' and 1 or 0}
"""


def test_run_script_runs_on_the_stores_own_entries_or_not_at_all(store: ShortLivedStore) -> None:
    store.put("code", "read", {"v": "读"}, ttl=60)
    entries = [("code", "read"), ("rate", "n"), ("code", "written"), None]
    reply = store.run_script(_SCRIPT, entries, ['{"v": 2}', 60])
    if isinstance(store, MemoryStore):
        # No Lua: nothing ran, nothing changed; the caller goes step by step.
        assert reply is None
        assert store.get("code", "written") is None
        assert store.incr("rate", "n", ttl=60) == 1
        return
    assert reply == ['{"v": "\\u8bfb"}', 1, 1]
    # Its keys are the store's keys: what it wrote and counted, the methods see.
    assert store.get("code", "written") == {"v": 2}
    assert store.incr("rate", "n", ttl=60) == 2
    # Again: the registered script (EVALSHA) on the same entries.
    assert store.run_script(_SCRIPT, entries, ['{"v": 3}', 60]) == ['{"v": "\\u8bfb"}', 3, 1]
    assert store.get("code", "written") == {"v": 3}
