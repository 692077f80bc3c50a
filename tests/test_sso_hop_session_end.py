"""The SSO hop (GET /authorize with a gateway session) and a session that is no longer good.

Two ways a session stops being one while a browser still holds its cookie:

* its account was disabled (``accounts.status`` != "active"; there is no CLI or page for
  it: an operator changes the row): /authorize treats the session as absent (login page,
  or ``login_required`` for prompt=none), does not write it back, and the token endpoint
  redeems neither a code nor a refresh token of the account;
* it ended (sso.logout.end_session, by another request or instance) between the hop's
  read of the session and its write-back: the write-back must not bring it back (record
  UPDATE only while not ended, store write only while the entry exists), the code
  already made is never stored (it goes with the session's write-back, atomically),
  and the request is answered as one without a session.

Both run on the embedded backends (SQLite + in-process store) and on PostgreSQL + Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from sso import consent, logout
from sso import session as browser_session
from sso.db import db
from sso.models import Account, AuditEvent, SessionRecord
from sso.oidc.grants import CODE_KIND
from tests.backends import pg_url, redis_url  # noqa: F401  (fixtures)
from tests.conftest import (
    BOTH_BACKENDS,
    Browser,
    Portal,
    basic,
    make_portal,
    make_record_stale,
    on_both_backends,
    query_of,
    redeem,
    running,
    session_handle,
)

SCOPES = ["openid", "profile"]


@pytest.fixture(params=BOTH_BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Flask]:
    with running(on_both_backends(request, tmp_path, client_cache_ttl=60)) as app:
        yield app


@pytest.fixture
def signed_in(gateway: Flask) -> tuple[Any, Browser, dict[str, Portal]]:
    """Alice signed in at "tax"; "social" pre-consented (a hop there issues a code at once)."""
    from sso.connectors.local import create_account

    portals = {name: make_portal(name) for name in ("tax", "social")}
    account = create_account("alice", "correct horse battery staple", "Alice")
    consent.remember(account.id, "social", SCOPES)
    browser = Browser(gateway.test_client())
    browser.code_for(portals["tax"])  # login + consent at the first portal
    return account, browser, portals


def _store(app: Flask) -> Any:
    return app.extensions["sso"].store


def _record() -> SessionRecord:
    db.session.expire_all()
    [record] = db.session.execute(db.select(SessionRecord)).scalars().all()
    return record


def _audited() -> int:
    db.session.expire_all()
    return len(db.session.execute(db.select(AuditEvent)).scalars().all())


def _session_ops(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls made on the short-lived store for sessions, from now on."""
    ops: list[str] = []
    store = _store(app)
    for name in ("get", "put", "replace", "touch", "delete"):
        method = getattr(store, name)

        def call(kind: str, *args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            if kind == browser_session.KIND:
                ops.append(_name)
            return _method(kind, *args, **kwargs)

        monkeypatch.setattr(store, name, call)
    return ops


def _assert_login_page(response: Any) -> None:
    assert response.status_code == 302, response.text[:300]
    assert response.headers["Location"].startswith("/login?interaction="), response.headers["Location"]


def _assert_login_required(response: Any, portal: Portal) -> None:
    assert response.status_code == 302, response.text[:300]
    location = response.headers["Location"]
    assert location.startswith(portal.redirect_uri), location
    query = query_of(location)
    assert query["error"] == "login_required" and query["state"] == "st-123" and "code" not in query


def _disable(account: Any) -> None:
    row = db.session.get(Account, account.id)
    row.status = "disabled"
    db.session.commit()


# ---- 1. a disabled account ------------------------------------------------------------------


@pytest.mark.parametrize("target", ["tax", "social"])
def test_a_disabled_accounts_session_is_no_session_and_is_not_written_back(
    gateway: Flask, signed_in: Any, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    account, browser, portals = signed_in
    handle = session_handle(browser)
    if target == "tax":
        make_record_stale(gateway, handle)  # a write-back would UPDATE the record and SET the session
    before = _record()
    _disable(account)
    audited = _audited()
    ops = _session_ops(gateway, monkeypatch)
    _assert_login_page(browser.authorize(portals[target]))
    _assert_login_required(browser.authorize(portals[target], prompt="none"), portals[target])
    # Read, never slid nor stored back: by the hop's lane, which leaves the request to
    # Flask with nothing written, then by the Flask view (sso.oidc.hop), per request.
    assert ops == ["get", "get"] * 2
    after = _record()
    assert (after.last_seen_at, after.expires_at, after.clients) == (before.last_seen_at, before.expires_at, [])
    assert _audited() == audited
    stored = _store(gateway).get(browser_session.KIND, handle)
    assert stored is not None and stored["clients"] == ["tax"]


def test_a_code_or_refresh_token_of_a_disabled_account_is_not_redeemed(gateway: Flask, signed_in: Any) -> None:
    account, browser, portals = signed_in
    client = gateway.test_client()
    code, verifier = browser.code_for(portals["social"])
    refresh_token = redeem(client, portals["tax"], *browser.code_for(portals["tax"])).get_json()["refresh_token"]
    _disable(account)
    response = redeem(client, portals["social"], code, verifier)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant", response.text
    response = client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers=basic(portals["tax"]),
    )
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant", response.text


# ---- 2. a session that ends during the hop ----------------------------------------------------


def _end_from_another_instance(app: Flask, sid: str) -> None:
    # Its own app context: its own database session and transaction, as on another instance.
    with app.app_context():
        assert logout.end_session(sid, "logout")
        db.session.remove()


@pytest.mark.parametrize(
    ("path", "ended"),
    [
        ("new_portal", "after_code"),  # save(): record UPDATE + SET XX with the portal joined
        ("new_portal", "before_code"),
        ("known_stale", "after_code"),  # settle(): record sync + SET XX
        ("known_fresh", "after_code"),  # settle(): EXPIRE alone
        ("known_fresh", "before_code"),
    ],
)
@pytest.mark.parametrize("prompt", [None, "none"])
def test_a_session_ended_during_the_hop_stays_ended_and_gets_no_code(
    gateway: Flask, signed_in: Any, monkeypatch: pytest.MonkeyPatch, path: str, ended: str, prompt: str | None
) -> None:
    _, browser, portals = signed_in
    portal = portals["social" if path == "new_portal" else "tax"]
    handle = session_handle(browser)
    sid = _record().sid
    if path == "known_stale":
        make_record_stale(gateway, handle)
    made: list[str] = []
    server = gateway.extensions["sso"].server
    if ended == "after_code":
        original = server.create_authorization_response

        def then_logout(*args: Any, **kwargs: Any) -> Any:
            response = original(*args, **kwargs)
            made.append(query_of(response.location)["code"])  # stored only with the session's write-back
            _end_from_another_instance(gateway, sid)
            return response

        monkeypatch.setattr(server, "create_authorization_response", then_logout)
    else:
        original_decide = consent.decide

        def logout_then_decide(ctx: Any) -> Any:
            if not made:  # once: the hop's lane decides first, Flask again after it (sso.oidc.hop)
                made.append("logout")
                _end_from_another_instance(gateway, sid)
            return original_decide(ctx)

        monkeypatch.setattr(consent, "decide", logout_then_decide)

    params = {"prompt": prompt} if prompt else {}
    response = browser.authorize(portal, **params)
    monkeypatch.undo()

    if prompt == "none":
        _assert_login_required(response, portal)
    else:
        _assert_login_page(response)
    if ended == "after_code":
        [code] = made
        assert _store(gateway).get(CODE_KIND, code) is None  # withdrawn
        refused = redeem(gateway.test_client(), portal, code, "v" * 43)
        assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_grant"
    # Still logged out: neither the store nor the record brought the session back.
    assert _store(gateway).get(browser_session.KIND, handle) is None
    record = _record()
    assert record.ended_at is not None and record.end_reason == "logout"
    # On PostgreSQL the due sync of the record is committed with the hop's read, before
    # the logout (sso.oidc.authorize._answer): the record's snapshot of the session's
    # portals, as read (the logout then told them); elsewhere it was rolled back.
    synced_first = path == "known_stale" and db.engine.dialect.name == "postgresql"
    assert record.clients == (["tax"] if synced_first else [])
    _assert_login_page(browser.authorize(portals["tax"]))


def test_a_code_issued_before_a_logout_is_not_exchanged_after_it(gateway: Flask, signed_in: Any) -> None:
    # The logout revoked the session's grants; one opened afterwards from a code the
    # session got earlier would outlive the logout.
    from sso.crypto import token_hash
    from sso.models import Grant

    _, browser, portals = signed_in
    code, verifier = browser.code_for(portals["social"])
    assert logout.end_session(_record().sid, "logout")
    response = redeem(gateway.test_client(), portals["social"], code, verifier)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant", response.text
    assert db.session.execute(db.select(Grant).filter_by(code_hash=token_hash(code))).first() is None


def test_a_page_that_reads_a_session_ended_meanwhile_does_not_bring_it_back(
    gateway: Flask, signed_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same guard for a page's read (current() slides at once): a stale record is
    # synced (UPDATE + SET XX) after the load, by which time the session has ended.
    _, browser, portals = signed_in
    handle = session_handle(browser)
    sid = _record().sid
    make_record_stale(gateway, handle)
    original_load = browser_session.load

    def load_then_logout(h: str) -> Any:
        found = original_load(h)
        _end_from_another_instance(gateway, sid)
        return found

    monkeypatch.setattr(browser_session, "load", load_then_logout)
    page = browser.client.get("/account")
    monkeypatch.undo()
    assert page.status_code == 302 and "/login" in page.headers["Location"], page.status_code
    assert _store(gateway).get(browser_session.KIND, handle) is None
    assert _record().ended_at is not None
    _assert_login_page(browser.authorize(portals["tax"]))


def test_a_write_back_that_finds_its_handle_gone_leaves_the_record_to_the_live_handle(
    gateway: Flask, signed_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another request rotated the session (step-up: new handle, the old one deleted)
    # after this page read it with a stale record.  Its write-back must not point the
    # record back at the dead handle: a logout deletes the record's handle, and would
    # then leave the live one signed in.
    _, browser, _ = signed_in
    old = session_handle(browser)
    sid = _record().sid
    make_record_stale(gateway, old)
    original_load = browser_session.load

    def load_then_rotate_elsewhere(h: str) -> Any:
        found = original_load(h)
        with gateway.app_context():
            data = _store(gateway).get(browser_session.KIND, old)
            _store(gateway).delete(browser_session.KIND, old)
            _store(gateway).put(browser_session.KIND, "rotated-handle", data, 600)
            db.session.execute(db.update(SessionRecord).filter_by(sid=sid).values(handle="rotated-handle"))
            db.session.commit()
            db.session.remove()
        return found

    monkeypatch.setattr(browser_session, "load", load_then_rotate_elsewhere)
    page = browser.client.get("/account")
    monkeypatch.undo()
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    assert _store(gateway).get(browser_session.KIND, old) is None
    record = _record()
    assert record.handle == "rotated-handle" and record.ended_at is None
    assert logout.end_session(sid, "logout")
    assert _store(gateway).get(browser_session.KIND, "rotated-handle") is None  # the logout reached it
