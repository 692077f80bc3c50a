"""Refresh tokens: rotation on every use, reuse revokes the family (RFC 9700 §4.14)."""

from __future__ import annotations

import threading

from sso.crypto import token_hash
from sso.db import db
from sso.models import RefreshToken
from tests.conftest import basic, redeem


def refresh(client, portal, token, **extra):
    return client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": token, **extra}, headers=basic(portal)
    )


def tokens_for(browser, client, portal):
    code, verifier = browser.code_for(portal)
    return redeem(client, portal, code, verifier).get_json()


def test_refresh_rotates(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    second = refresh(client, portal, first["refresh_token"])
    assert second.status_code == 200, second.text
    body = second.get_json()
    assert body["refresh_token"] != first["refresh_token"]
    assert body["access_token"] != first["access_token"]
    assert body["scope"] == "openid profile"


def test_refresh_tokens_are_stored_by_hash_only(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    assert db.session.get(RefreshToken, token_hash(first["refresh_token"])) is not None
    assert db.session.get(RefreshToken, first["refresh_token"]) is None


def test_reuse_of_a_rotated_token_revokes_the_family(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    second = refresh(client, portal, first["refresh_token"]).get_json()
    reuse = refresh(client, portal, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.get_json()["error"] == "invalid_grant"
    # The attacker's replay also kills the legitimate holder's newest tokens.
    assert refresh(client, portal, second["refresh_token"]).get_json()["error"] == "invalid_grant"
    introspected = client.post("/introspect", data={"token": second["access_token"]}, headers=basic(portal))
    assert introspected.get_json() == {"active": False}
    userinfo = client.get("/userinfo", headers={"Authorization": "Bearer " + second["access_token"]})
    assert userinfo.status_code == 401


def test_narrower_scope_on_refresh_keeps_the_grant_scope_for_the_next_token(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    narrow = refresh(client, portal, first["refresh_token"], scope="openid").get_json()
    assert narrow["scope"] == "openid"
    wide = refresh(client, portal, narrow["refresh_token"]).get_json()
    assert wide["scope"] == "openid profile"


def test_wider_scope_on_refresh_is_invalid_scope(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    response = refresh(client, portal, first["refresh_token"], scope="openid profile admin")
    assert response.get_json()["error"] == "invalid_scope"


def test_refresh_token_is_bound_to_its_client(app, browser, client, portal, account):
    from sso.clients import create_client
    from tests.conftest import Portal

    first = tokens_for(browser, client, portal)
    other = create_client(name="Other", client_id="other", redirect_uris=["https://o.example/cb"])
    response = refresh(client, Portal("other", other.client_secret), first["refresh_token"])
    assert response.get_json()["error"] == "invalid_grant"
    # The rightful client can still use it: a stranger's attempt is not "reuse".
    assert refresh(client, portal, first["refresh_token"]).status_code == 200


def test_concurrent_refresh_exactly_one_wins(app, browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    results: list[int] = []
    barrier = threading.Barrier(10)

    def worker() -> None:
        c = app.test_client()
        barrier.wait()
        results.append(refresh(c, portal, first["refresh_token"]).status_code)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(200) == 1
    assert results.count(400) == 9


def test_unknown_refresh_token_is_invalid_grant(client, portal):
    response = refresh(client, portal, "not-a-token")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"


def test_invalid_scope_does_not_spend_the_token(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    assert refresh(client, portal, first["refresh_token"], scope="admin").get_json()["error"] == "invalid_scope"
    assert refresh(client, portal, first["refresh_token"]).status_code == 200


def test_a_refresh_whose_commit_fails_leaves_the_old_token_usable(app, browser, client, portal, account):
    """The claim and the successor commit together: a failed commit leaves neither."""
    from sqlalchemy import event, exc

    first = tokens_for(browser, client, portal)
    grant_id = db.session.get(RefreshToken, token_hash(first["refresh_token"])).grant_id
    stored_before = db.session.execute(
        db.select(db.func.count()).select_from(RefreshToken).filter_by(grant_id=grant_id)
    ).scalar_one()
    db.session.rollback()

    def fail(conn):
        raise exc.OperationalError("COMMIT", {}, Exception("the database went away"))

    event.listen(db.engine, "commit", fail)
    try:
        failed = refresh(client, portal, first["refresh_token"])
    finally:
        event.remove(db.engine, "commit", fail)
    assert failed.status_code == 503 and failed.get_json()["error"] == "temporarily_unavailable"
    stored_after = db.session.execute(
        db.select(db.func.count()).select_from(RefreshToken).filter_by(grant_id=grant_id)
    ).scalar_one()
    assert stored_after == stored_before  # no successor stored
    row = db.session.get(RefreshToken, token_hash(first["refresh_token"]))
    assert row.used_at is None  # not spent
    db.session.rollback()
    # The client's retry is a normal refresh, not "reuse" that would revoke the grant.
    retried = refresh(client, portal, first["refresh_token"])
    assert retried.status_code == 200, retried.text
    assert refresh(client, portal, first["refresh_token"]).get_json()["error"] == "invalid_grant"


def test_reuse_is_recorded_and_names_the_reason(browser, client, portal, account):
    from sso.models import AuditEvent, Grant

    first = tokens_for(browser, client, portal)
    grant_id = db.session.get(RefreshToken, token_hash(first["refresh_token"])).grant_id
    assert refresh(client, portal, first["refresh_token"]).status_code == 200
    assert refresh(client, portal, first["refresh_token"]).get_json()["error"] == "invalid_grant"
    db.session.expire_all()
    grant = db.session.get(Grant, grant_id)
    assert grant.revoked_at is not None and grant.revoked_reason == "refresh_reuse"
    events = db.session.execute(db.select(AuditEvent).filter_by(event="token.refresh_reuse")).scalars().all()
    recorded = [(e.outcome, e.client_id, e.detail.get("grant")) for e in events]
    assert recorded == [("failure", portal.client_id, grant_id)]


def test_an_expired_refresh_token_is_invalid_grant_and_revokes_nothing(browser, client, portal, account):
    from datetime import timedelta

    from sso.models import Grant, utcnow

    first = tokens_for(browser, client, portal)
    row = db.session.get(RefreshToken, token_hash(first["refresh_token"]))
    row.expires_at = utcnow() - timedelta(seconds=1)
    grant_id = row.grant_id
    db.session.commit()
    response = refresh(client, portal, first["refresh_token"])
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
    db.session.expire_all()
    assert db.session.get(Grant, grant_id).revoked_at is None
    assert db.session.get(RefreshToken, token_hash(first["refresh_token"])).used_at is None
