"""The password throttle on Redis: one round trip for guard(), one for success().

guard() reads the IP's state, counts the attempt and reads the account's state;
on Redis these are one script call (the IP check first: a locked IP counts
nothing); failure() records the wait and counts the IP's failure in one more
(a state that may hold a lock goes the store-by-store way), and success() clears
both account keys with one DEL.  The answers
must be exactly the ones the store-by-store path gives, which the memory store
(tests/test_throttle.py) still takes: the same scenario runs on both here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from sso import throttle
from sso.storage import RedisStore, StoreUnavailable
from tests.backends import RedisCommands, redis_url  # noqa: F401  (fixture)
from tests.conftest import csrf_from, make_settings, running


@pytest.fixture
def redis_app(tmp_path: Any, redis_url: str) -> Iterator[Flask]:  # noqa: F811
    with running(make_settings(tmp_path / "redis", redis_url=redis_url)) as application:
        assert isinstance(application.extensions["sso"].store, RedisStore)
        yield application
    application.extensions["sso"].store.close()




def test_guard_and_success_are_one_round_trip_each(redis_app: Flask, monkeypatch: pytest.MonkeyPatch):
    store = redis_app.extensions["sso"].store
    with redis_app.test_request_context(environ_base={"REMOTE_ADDR": "192.0.2.50"}):
        throttle.guard("password", "warm-up")  # loads the script into Redis
        commands = RedisCommands(store, monkeypatch)
        verdict = throttle.guard("password", "alice")
        assert verdict.allowed and verdict.account is not None and verdict.account[1] == 1
        assert commands.sent == ["EVALSHA"]
        commands.sent.clear()
        throttle.success(verdict)
        assert commands.sent == ["DEL"]
        throttle.failure(throttle.guard("password", "warm-up"))  # loads the failure script
        commands.sent.clear()
        wrong = throttle.guard("password", "mallory")
        throttle.failure(wrong)  # the wait recorded and the IP's failure counted: one script call
        assert commands.sent == ["EVALSHA", "EVALSHA"]
        commands.sent.clear()
        assert throttle.guard("totp", None).allowed  # no account key: the IP's state alone
        assert commands.sent == ["EVALSHA"]
    # Both account keys are gone: the next attempt is the first again.
    with redis_app.test_request_context(environ_base={"REMOTE_ADDR": "192.0.2.50"}):
        again = throttle.guard("password", "alice")
        assert again.account is not None and again.account[1] == 1


def test_script_is_reloaded_after_a_redis_restart(redis_app: Flask):
    store = redis_app.extensions["sso"].store
    with redis_app.test_request_context(environ_base={"REMOTE_ADDR": "192.0.2.51"}):
        assert throttle.guard("password", "bob").allowed
        store._client.script_flush()  # what a restarted Redis has: no scripts
        second = throttle.guard("password", "bob")
        assert second.allowed and second.account is not None and second.account[1] == 2


def _scenario(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Delays, refusals during a wait, parallel attempts, the lockout, a success, an IP lock."""
    wall = {"t": 1_800_000_000.25}
    monkeypatch.setattr(throttle, "_clock", lambda: wall["t"])
    monkeypatch.setitem(throttle.POLICIES, "scenario-ip", throttle.Policy(ip_limit=3))
    monkeypatch.setitem(throttle.POLICIES, "scenario-lock", throttle.Policy(free_failures=1, account_limit=4))
    store = app.extensions["sso"].store
    seen: list[Any] = []

    def note(verdict: throttle.Verdict) -> throttle.Verdict:
        seen.append((verdict.allowed, verdict.retry_after, verdict.locked, verdict.account and verdict.account[1]))
        return verdict

    with app.test_request_context(environ_base={"REMOTE_ADDR": "198.51.100.7"}):
        for _ in range(14):  # to the lockout, retrying at once after each refusal, then after the wait
            verdict = note(throttle.guard("password", "carol"))
            if verdict.allowed:
                throttle.failure(verdict)
            else:
                note(throttle.guard("password", "carol"))  # ignores Retry-After: counted, refused
                wall["t"] += verdict.retry_after
        akey = throttle._key("password", "account", throttle.login_key("carol"))
        seen.append(store.get(throttle.STATE, akey))
        # Two attempts in flight in the delay regime: the second is refused.
        for _ in range(3):
            throttle.failure(note(throttle.guard("password", "dave")))
        wall["t"] += 1
        first, second = note(throttle.guard("password", "dave")), note(throttle.guard("password", "dave"))
        throttle.success(first)
        seen.append(note(throttle.guard("password", "dave")).account is None)
        seen.append(second.allowed)
        # A failure that finishes while a lock runs keeps the lock (failure()'s own path).
        slow = note(throttle.guard("scenario-lock", "ivan"))  # attempt 1, checked slowly, while
        for _ in range(3):  # 2, 3 and 4 are refused (attempt 1 has not finished) ...
            note(throttle.guard("scenario-lock", "ivan"))
        wall["t"] += 1
        note(throttle.guard("scenario-lock", "ivan"))  # ... and 5, past the limit, locks the key
        throttle.failure(slow)
        ivan = throttle._key("scenario-lock", "account", throttle.login_key("ivan"))
        seen.append(store.get(throttle.STATE, ivan))
        seen.append(note(throttle.guard("scenario-lock", "ivan")).locked)
        # An IP lock refuses before the account is counted.
        for name in ("erin", "frank", "grace"):
            throttle.failure(note(throttle.guard("scenario-ip", name)))
        note(throttle.guard("scenario-ip", "heidi"))
        note(throttle.guard("scenario-ip", None))
        heidi = throttle._key("scenario-ip", "account", throttle.login_key("heidi"))
        seen.append(store.incr(throttle.COUNT, heidi, 900))  # 1: the refused attempt counted nothing
        ikey = throttle._key("scenario-ip", "ip", "198.51.100.7")
        seen.append(store.get(throttle.STATE, ikey))
    return seen


def test_redis_and_the_store_by_store_path_answer_alike(app: Flask, redis_app: Flask, monkeypatch):
    on_memory = _scenario(app, monkeypatch)
    on_redis = _scenario(redis_app, monkeypatch)
    assert on_redis == on_memory
    assert any(entry[2] for entry in on_memory if isinstance(entry, tuple) and len(entry) == 4)  # a lock was met


def test_redis_down_fails_closed(redis_app: Flask, monkeypatch: pytest.MonkeyPatch):
    dead = RedisStore("redis://127.0.0.1:9/0", socket_timeout=0.2)
    monkeypatch.setattr(redis_app.extensions["sso"], "store", dead)
    with redis_app.test_request_context(environ_base={"REMOTE_ADDR": "192.0.2.52"}):
        with pytest.raises(StoreUnavailable):
            throttle.guard("password", "alice")
        with pytest.raises(StoreUnavailable):
            throttle.success(throttle.Verdict(True, scope="password", account=("key", 1)))
    client = redis_app.test_client()
    token = csrf_from(client.get("/login").text)  # the page itself needs no store
    answer = client.post("/login", data={"csrf_token": token, "username": "alice", "password": "x"})
    assert answer.status_code == 503
