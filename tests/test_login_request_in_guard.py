"""The sign-in's stored authorization request is read in the throttle's round trip.

POST /login needs the request it signs in for (gone: 400, nothing counted) and the
throttle's reads (sso.throttle.guard).  On Redis both are one script call
(``guard_for_entry``): the request first, and when it is gone the script stops
before it counts anything.  Elsewhere the store is read entry by entry, in the
same order.  The answers are the ones the separate read gave: 400 for an expired
or unknown request (never counted), the page with "Please fill in both fields."
for an incomplete form, 429 for a throttled name, 302 for a sign-in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sso import throttle
from sso.oidc.authorize import INTERACTION
from sso.storage import RedisStore
from sso.storage.base import storage_key
from tests.backends import RedisCommands, redis_url  # noqa: F401  (fixture)
from tests.conftest import (
    PASSWORD,
    USERNAME,
    Browser,
    csrf_from,
    interaction_from,
    make_portal,
    make_settings,
    running,
)

EXPIRED = "This sign-in request has expired."


@pytest.fixture
def redis_app(tmp_path: Any, redis_url: str) -> Iterator[Flask]:  # noqa: F811
    from sso.connectors.local import create_account

    with running(make_settings(tmp_path / "redis", redis_url=redis_url)) as application:
        assert isinstance(application.extensions["sso"].store, RedisStore)
        create_account(USERNAME, PASSWORD, "Alice")
        yield application
    application.extensions["sso"].store.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def gateway(request: pytest.FixtureRequest, app: Flask) -> Flask:
    if request.param == "memory":
        from sso.connectors.local import create_account

        create_account(USERNAME, PASSWORD, "Alice")
        return app
    return request.getfixturevalue("redis_app")  # type: ignore[no-any-return]




def _login_page(client: FlaskClient, gateway: Flask) -> tuple[str, str]:
    """A portal's authorization request and its login page: (interaction id, CSRF token)."""
    client.set_cookie("lang", "en")
    portal = make_portal("guard-portal")
    location = Browser(client).authorize(portal).headers["Location"]
    page = client.get(location)
    assert page.status_code == 200
    return interaction_from(location), csrf_from(page.text)


def _attempts(gateway: Flask, name: str) -> int:
    """How many attempts the throttle has counted for ``name`` (read without counting one)."""
    akey = throttle._key("password", "account", throttle.login_key(name))
    store = gateway.extensions["sso"].store
    if isinstance(store, RedisStore):
        return int(store._client.get(store._key(throttle.COUNT, akey)) or 0)
    entry = store._live(storage_key(throttle.COUNT, akey), store._clock())  # the memory store's own look
    return int(entry.value) if entry is not None else 0


def test_a_sign_in_reads_its_request_in_the_guards_round_trip(redis_app: Flask, monkeypatch: pytest.MonkeyPatch):
    client = redis_app.test_client()
    uid, token = _login_page(client, redis_app)
    with redis_app.test_request_context(environ_base={"REMOTE_ADDR": "192.0.2.60"}):
        throttle.guard_for_entry("password", "warm-up", (INTERACTION, uid))  # loads the script into Redis
    commands = RedisCommands(redis_app.extensions["sso"].store, monkeypatch)
    answer = client.post(
        "/login", data={"csrf_token": token, "interaction": uid, "username": USERNAME, "password": PASSWORD}
    )
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/authorize/resume?interaction=")
    # The request and the throttle's reads: one script call; no GET before it.
    assert commands.sent[0] == "EVALSHA" and "GET" not in commands.sent
    assert commands.sent.count("EVALSHA") == 1


@pytest.mark.parametrize("password", [PASSWORD, "wrong password"])
def test_an_expired_request_is_refused_and_not_counted(gateway: Flask, password: str):
    client = gateway.test_client()
    uid, token = _login_page(client, gateway)
    gateway.extensions["sso"].store.delete(INTERACTION, uid)  # expired meanwhile
    answer = client.post(
        "/login", data={"csrf_token": token, "interaction": uid, "username": USERNAME, "password": password}
    )
    assert answer.status_code == 400 and EXPIRED in answer.text
    assert "sso_csrf=" not in answer.headers.get("Set-Cookie", "")  # the secret the page set stays
    assert _attempts(gateway, USERNAME) == 0


def test_an_unknown_or_overlong_request_id_is_refused_and_not_counted(gateway: Flask):
    client = gateway.test_client()
    _uid, token = _login_page(client, gateway)
    for uid in ("no-such-request", "x" * 65):
        answer = client.post(
            "/login", data={"csrf_token": token, "interaction": uid, "username": USERNAME, "password": PASSWORD}
        )
        assert answer.status_code == 400 and EXPIRED in answer.text
    assert _attempts(gateway, USERNAME) == 0


def test_an_incomplete_form_gets_the_page_or_the_expired_answer_as_before(gateway: Flask):
    client = gateway.test_client()
    uid, token = _login_page(client, gateway)
    incomplete = client.post("/login", data={"csrf_token": token, "interaction": uid, "username": USERNAME})
    assert incomplete.status_code == 400 and "Please fill in both fields." in incomplete.text
    assert f'name="interaction" type="hidden" value="{uid}"' in incomplete.text
    gateway.extensions["sso"].store.delete(INTERACTION, uid)
    expired = client.post("/login", data={"csrf_token": token, "interaction": uid, "username": USERNAME})
    assert expired.status_code == 400 and EXPIRED in expired.text
    assert _attempts(gateway, USERNAME) == 0


def test_a_throttled_name_is_refused_for_a_live_request_and_counted(gateway: Flask, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(throttle.POLICIES, "password", throttle.Policy(free_failures=1, account_limit=2))
    wall = {"t": 1_800_000_000.0}
    monkeypatch.setattr(throttle, "_clock", lambda: wall["t"])
    client = gateway.test_client()
    uid, token = _login_page(client, gateway)
    data = {"csrf_token": token, "interaction": uid, "username": USERNAME, "password": "wrong password"}
    assert client.post("/login", data=data).status_code == 401
    wall["t"] += 1  # the wait after the first failure
    assert client.post("/login", data=data).status_code == 401  # the second failure locks the name
    locked = client.post("/login", data={**data, "password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 1
    assert _attempts(gateway, USERNAME) == 3
    gateway.extensions["sso"].store.delete(INTERACTION, uid)
    assert client.post("/login", data=data).status_code == 400  # gone: refused before the throttle
    assert _attempts(gateway, USERNAME) == 3


def test_a_sign_in_without_a_request_uses_the_plain_guard(gateway: Flask):
    client = gateway.test_client()
    client.set_cookie("lang", "en")
    token = csrf_from(client.get("/login").text)
    answer = client.post("/login", data={"csrf_token": token, "username": USERNAME, "password": PASSWORD})
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    assert _attempts(gateway, USERNAME) == 0  # the success cleared the count


def _guard_answers(application: Flask, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """guard_for_entry's answers: a live entry, a gone one, a locked IP, the count afterwards."""
    monkeypatch.setattr(throttle, "_clock", lambda: 1_800_000_000.5)
    monkeypatch.setitem(throttle.POLICIES, "entry-ip", throttle.Policy(ip_limit=1))
    store = application.extensions["sso"].store
    store.put(INTERACTION, "live", {"args": [["client_id", "p"]], "n": 1}, 60)
    seen: list[Any] = []
    with application.test_request_context(environ_base={"REMOTE_ADDR": "203.0.113.9"}):
        for scope, name, uid in [
            ("password", "judy", "live"),
            ("password", "judy", "gone"),
            ("password", "judy", "live"),
            ("entry-ip", "kim", "live"),  # its failure locks the IP for the scope
            ("entry-ip", "kim", "live"),
            ("entry-ip", "kim", "gone"),
            ("entry-ip", None, "live"),
        ]:
            value, verdict = throttle.guard_for_entry(scope, name, (INTERACTION, uid))
            seen.append((value, verdict and (verdict.allowed, verdict.locked, verdict.account and verdict.account[1])))
            if scope == "entry-ip" and verdict is not None and verdict.allowed:
                throttle.failure(verdict)
        seen.append(throttle.guard("password", "judy").account)  # attempt 3: the gone entry counted nothing
    return [(v, tuple(x) if isinstance(x, tuple) else x) for v, x in seen[:-1]] + [seen[-1][1]]  # type: ignore[index]


def test_redis_and_the_entry_by_entry_path_answer_alike(app: Flask, redis_app: Flask, monkeypatch):
    on_memory = _guard_answers(app, monkeypatch)
    on_redis = _guard_answers(redis_app, monkeypatch)
    assert on_redis == on_memory
    live = {"args": [["client_id", "p"]], "n": 1}
    assert on_memory == [
        (live, (True, False, 1)),
        (None, None),
        (live, (True, False, 2)),
        (live, (True, False, 1)),
        (live, (False, True, None)),
        (None, None),
        (live, (False, True, None)),
        3,
    ]
