"""Refresh rotation on PostgreSQL, where the claim and the successor are one statement.

On PostgreSQL the claiming ``UPDATE … WHERE used_at IS NULL`` and the successor's
``INSERT`` run as one data-modifying CTE (``sso.oidc.grants``): the successor row
exists iff that statement flipped ``used_at``.  The usual refresh makes it the only
statement (the claim also returns the token and its grant), committing by itself and
undone if the answer then fails; a token it cannot claim, a narrower scope and a
legal-person grant go the long way (read, check, claim, commit).
These tests hold both to the same guarantees as the SQLite form: rotation, reuse
revoking the family, a stranger's or an expired token spending nothing, exactly one
winner among concurrent uses (real row locks), a failed commit or an unreachable
registry leaving the old token usable.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from sso.crypto import token_hash
from sso.db import db
from sso.models import Grant, RefreshToken
from tests.backends import pg_url  # noqa: F401  (fixture)
from tests.conftest import Browser, Portal, basic, make_settings, redeem, running
from tests.test_token_statements import recording

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_app(tmp_path: Any, pg_url: str) -> Iterator[Flask]:  # noqa: F811
    with running(make_settings(tmp_path, database_url=pg_url, client_cache_ttl=60)) as app:
        yield app


@pytest.fixture
def setup(pg_app: Flask) -> tuple[Any, Portal, Browser]:
    from sso.clients import create_client
    from sso.connectors.local import create_account

    create_account("alice", "correct horse battery staple", "Alice")
    reg = create_client(
        name="Tax",
        client_id="tax-portal",
        redirect_uris=["https://portal.example.gov.cn/callback"],
        grant_types=["authorization_code", "refresh_token", "client_credentials"],
    )
    portal = Portal(reg.client.client_id, reg.client_secret)
    client = pg_app.test_client()
    return client, portal, Browser(client)


def refresh(client: Any, portal: Portal, token: str) -> Any:
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token}, headers=basic(portal))


def first_tokens(client: Any, portal: Portal, browser: Browser) -> dict[str, Any]:
    code, verifier = browser.code_for(portal)
    response = redeem(client, portal, code, verifier)
    assert response.status_code == 200, response.text
    return response.get_json()  # type: ignore[no-any-return]


def test_code_exchange_and_refresh_statements(pg_app, setup):
    client, portal, browser = setup
    code, verifier = browser.code_for(portal)
    with recording(pg_app) as seen:
        first = redeem(client, portal, code, verifier)
    assert first.status_code == 200, first.text
    # The grant with its first refresh token, then the sign-in's audit row; one commit.
    assert seen.statements == ["INSERT grants + INSERT refresh_tokens", "UPDATE audit_chain_head + INSERT audit_events"]
    assert seen.commits == 1
    with recording(pg_app) as seen:
        second = refresh(client, portal, first.get_json()["refresh_token"])
    assert second.status_code == 200, second.text
    # The claim, the successor and the token with its grant: one statement, which
    # commits by itself (no COMMIT of its own).
    assert seen.statements == ["UPDATE refresh_tokens + INSERT refresh_tokens"]
    assert seen.commits == 0
    # A narrower scope asked: the token is read and checked first, then claimed.
    with recording(pg_app) as seen:
        third = client.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": second.get_json()["refresh_token"],
                "scope": "openid",
            },
            headers=basic(portal),
        )
    assert third.status_code == 200, third.text
    assert third.get_json()["scope"] == "openid"
    assert seen.statements == ["SELECT refresh_tokens", "UPDATE refresh_tokens + INSERT refresh_tokens"]
    assert seen.commits == 1
    successor = db.session.get(RefreshToken, token_hash(third.get_json()["refresh_token"]))
    assert successor.scope == "openid profile"  # RFC 6749 §6: the grant's full scope


def test_rotation_and_reuse_revoke_the_family(pg_app, setup):
    client, portal, browser = setup
    first = first_tokens(client, portal, browser)
    second = refresh(client, portal, first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.get_json()
    assert rotated["refresh_token"] != first["refresh_token"] and rotated["scope"] == "openid profile"
    successor = db.session.get(RefreshToken, token_hash(rotated["refresh_token"]))
    old = db.session.get(RefreshToken, token_hash(first["refresh_token"]))
    assert successor is not None and successor.used_at is None and old.used_at is not None
    grant = db.session.get(Grant, old.grant_id)
    assert (successor.grant_id, successor.scope, successor.expires_at) == (grant.id, grant.scope, grant.expires_at)
    db.session.rollback()

    reuse = refresh(client, portal, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.get_json()["error"] == "invalid_grant"
    assert refresh(client, portal, rotated["refresh_token"]).get_json()["error"] == "invalid_grant"
    db.session.expire_all()
    assert db.session.get(Grant, old.grant_id).revoked_reason == "refresh_reuse"


def test_concurrent_refresh_exactly_one_wins(pg_app, setup):
    client, portal, browser = setup
    first = first_tokens(client, portal, browser)
    results: list[tuple[int, dict[str, Any]]] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        with pg_app.app_context():
            c = pg_app.test_client()
            barrier.wait()
            response = refresh(c, portal, first["refresh_token"])
            results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(status for status, _ in results) == [200] + [400] * 7
    assert all(body["error"] == "invalid_grant" for status, body in results if status == 400)
    # Exactly one successor was stored for the one winner.
    grant_id = db.session.get(RefreshToken, token_hash(first["refresh_token"])).grant_id
    rows = db.session.execute(db.select(RefreshToken).filter_by(grant_id=grant_id)).scalars().all()
    assert len(rows) == 2


def test_a_failed_commit_leaves_the_old_token_usable(pg_app, setup):
    """The long way (a narrower scope) commits its claim after the answer is made; a
    failed COMMIT spends nothing.  (The usual refresh has no COMMIT of its own: a
    failed claim statement, tests/test_refresh_at_once.py.)"""
    from sqlalchemy import event, exc

    client, portal, browser = setup
    first = first_tokens(client, portal, browser)
    grant_id = db.session.get(RefreshToken, token_hash(first["refresh_token"])).grant_id
    db.session.rollback()

    def fail(conn: Any) -> None:
        raise exc.OperationalError("COMMIT", {}, Exception("the database went away"))

    def narrower(token: str) -> Any:
        data = {"grant_type": "refresh_token", "refresh_token": token, "scope": "openid"}
        return client.post("/token", data=data, headers=basic(portal))

    event.listen(db.engine, "commit", fail)
    try:
        failed = narrower(first["refresh_token"])
    finally:
        event.remove(db.engine, "commit", fail)
    assert failed.status_code == 503 and failed.get_json()["error"] == "temporarily_unavailable"
    rows = db.session.execute(db.select(RefreshToken).filter_by(grant_id=grant_id)).scalars().all()
    assert [row.used_at for row in rows] == [None]  # neither the claim nor the successor
    db.session.rollback()
    assert narrower(first["refresh_token"]).status_code == 200
    assert narrower(first["refresh_token"]).get_json()["error"] == "invalid_grant"


def test_the_claim_runs_on_its_own_connection_and_is_always_given_back(pg_app, setup, monkeypatch):
    """The usual refresh claims on a Core connection of its own (not the request's ORM
    session), in one statement that commits by itself, and gives the connection back
    at once; when anything fails after the claim (here: the signature) the claim is
    undone, leaving the token usable."""
    from sso.oidc import tokens

    client, portal, browser = setup
    first = first_tokens(client, portal, browser)
    db.session.rollback()  # the test's own session gives its connection back
    pool = db.engine.pool
    assert pool.checkedout() == 0
    with recording(pg_app) as seen:
        ok = refresh(client, portal, first["refresh_token"])
    assert ok.status_code == 200 and seen.statements == ["UPDATE refresh_tokens + INSERT refresh_tokens"]
    db.session.rollback()  # recording() re-read the keys in the test's own session
    assert seen.commits == 0 and pool.checkedout() == 0
    second = ok.get_json()["refresh_token"]

    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("the signing key is unreadable")

    monkeypatch.setattr(tokens, "issue_access_token", broken)
    failed = refresh(client, portal, second)
    assert failed.status_code == 500 and failed.get_json()["error"] == "server_error"
    assert pool.checkedout() == 0  # given back, the claim undone
    monkeypatch.undo()
    again = refresh(client, portal, second)  # neither claimed nor replaced
    assert again.status_code == 200, again.text


def test_code_exchange_stores_the_grant_and_nothing_for_a_deleted_account(pg_app, setup):
    from sso.models import Account

    client, portal, browser = setup
    first = first_tokens(client, portal, browser)
    row = db.session.get(RefreshToken, token_hash(first["refresh_token"]))
    grant = db.session.get(Grant, row.grant_id)
    assert grant.amr == ["pwd"] and grant.acting is None and grant.scope == "openid profile"
    assert (row.scope, row.expires_at, row.used_at) == (grant.scope, grant.expires_at, None)
    db.session.rollback()

    code, verifier = browser.code_for(portal)
    db.session.delete(db.session.get(Account, grant.account_id))
    db.session.commit()
    response = redeem(client, portal, code, verifier)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
    assert db.session.execute(db.select(Grant).filter_by(code_hash=token_hash(code))).first() is None


def test_another_clients_or_an_expired_token_spends_nothing(pg_app, setup):
    from datetime import timedelta

    from sso.clients import create_client
    from sso.models import utcnow

    client, portal, browser = setup
    first = first_tokens(client, portal, browser)
    other = create_client(name="Other", client_id="other", redirect_uris=["https://o.example/cb"])
    stranger = refresh(client, Portal("other", other.client_secret), first["refresh_token"])
    assert stranger.status_code == 400 and stranger.get_json()["error"] == "invalid_grant"
    row = db.session.get(RefreshToken, token_hash(first["refresh_token"]))
    assert row.used_at is None and db.session.get(Grant, row.grant_id).revoked_at is None
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    expired = refresh(client, portal, first["refresh_token"])
    assert expired.status_code == 400 and expired.get_json()["error"] == "invalid_grant"
    db.session.expire_all()
    row = db.session.get(RefreshToken, token_hash(first["refresh_token"]))
    assert row.used_at is None and db.session.get(Grant, row.grant_id).revoked_at is None
    assert db.session.execute(db.select(RefreshToken).filter_by(grant_id=row.grant_id)).scalars().all() == [row]


ACTING = {
    "account_id": None,
    "credit_code": "91110000100000000X",
    "enterprise_name": "示例企业",
    "role": "legal_representative",
}


def _acting_grant(token: str) -> str:
    row = db.session.get(RefreshToken, token_hash(token))
    grant = db.session.get(Grant, row.grant_id)
    grant.acting = {**ACTING, "account_id": grant.account_id}
    grant.scope = row.scope = "openid profile cn_legal_person"
    db.session.commit()
    return grant.id


def test_a_legal_person_grant_is_checked_before_the_token_is_spent(pg_app, setup, monkeypatch):
    from sso import legal
    from sso.connectors.base import RegistryUnavailable

    client, portal, browser = setup
    first = first_tokens(client, portal, browser)
    grant_id = _acting_grant(first["refresh_token"])

    def unreachable(acting):
        raise RegistryUnavailable("down")

    monkeypatch.setattr(legal, "still_valid", unreachable)
    down = refresh(client, portal, first["refresh_token"])
    assert down.status_code == 503 and down.get_json()["error"] == "temporarily_unavailable"
    rows = db.session.execute(db.select(RefreshToken).filter_by(grant_id=grant_id)).scalars().all()
    assert [r.used_at for r in rows] == [None]  # not claimed at once: checked first
    db.session.rollback()

    checked: list[dict] = []
    monkeypatch.setattr(legal, "still_valid", lambda acting: checked.append(acting) or True)
    with recording(pg_app) as seen:
        ok = refresh(client, portal, first["refresh_token"])
    assert ok.status_code == 200, ok.text
    assert checked and checked[0]["credit_code"] == ACTING["credit_code"]
    # Not claimed at once (the statement leaves such a grant alone), then read, checked
    # and claimed.
    assert seen.statements == [
        "UPDATE refresh_tokens + INSERT refresh_tokens",
        "SELECT refresh_tokens",
        "UPDATE refresh_tokens + INSERT refresh_tokens",
    ]
    assert seen.commits == 1
    rows = db.session.execute(db.select(RefreshToken).filter_by(grant_id=grant_id)).scalars().all()
    assert sorted(r.used_at is None for r in rows) == [False, True]  # the old one used, one successor

    monkeypatch.setattr(legal, "still_valid", lambda acting: False)
    ended = refresh(client, portal, ok.get_json()["refresh_token"])
    assert ended.status_code == 400 and ended.get_json()["error"] == "invalid_grant"
    db.session.expire_all()
    assert db.session.get(Grant, grant_id).revoked_reason == "acting_ended"
