"""The usual refresh on PostgreSQL: one statement that commits by itself.

``RefreshTokenGrant._claim_at_once`` claims the token, stores its successor and reads
the grant in one statement run in psycopg's autocommit mode on a pooled connection of
its own (``sso.db.execute_at_once``): no BEGIN, no COMMIT, and the connection back in
the pool before the answer is signed.  Because the claim has committed before the
answer exists, a failure in between undoes it (the token usable again, the successor
deleted).  These tests hold it to that, and to the pool never getting a connection
back in autocommit mode.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import event

from sso.crypto import token_hash
from sso.db import db
from sso.models import Grant, RefreshToken
from tests import test_refresh_postgres as _refresh_postgres
from tests.backends import pg_url  # noqa: F401  (fixture)
from tests.conftest import Browser, Portal, redeem
from tests.test_token_statements import recording

# The PostgreSQL gateway, Alice and the tax portal, and the refresh call, as there.
pg_app, setup, refresh = _refresh_postgres.pg_app, _refresh_postgres.setup, _refresh_postgres.refresh

pytestmark = pytest.mark.postgres

CLAIM = "UPDATE refresh_tokens + INSERT refresh_tokens"
UNDO = "UPDATE refresh_tokens + DELETE refresh_tokens"


def first_token(client: Any, portal: Portal, browser: Browser) -> str:
    code, verifier = browser.code_for(portal)
    response = redeem(client, portal, code, verifier)
    assert response.status_code == 200, response.text
    db.session.rollback()
    return response.get_json()["refresh_token"]  # type: ignore[no-any-return]


def family(token: str) -> list[tuple[str, bool]]:
    """(token hash, used) of every refresh token of ``token``'s grant, the test's session ended."""
    grant_id = db.session.get(RefreshToken, token_hash(token)).grant_id
    rows = db.session.execute(db.select(RefreshToken).filter_by(grant_id=grant_id)).scalars().all()
    found = sorted((row.token_hash, row.used_at is not None) for row in rows)
    db.session.rollback()
    return found


def pooled_autocommit() -> list[bool]:
    """psycopg's autocommit flag of every connection resting in the pool."""
    return [
        record.dbapi_connection.autocommit
        for record in list(db.engine.pool._pool.queue)  # type: ignore[attr-defined]
        if record.dbapi_connection is not None
    ]


def test_the_usual_refresh_commits_by_itself_and_rests_the_connection(pg_app, setup):
    client, portal, browser = setup
    token = first_token(client, portal, browser)
    with recording(pg_app) as seen:
        response = refresh(client, portal, token)
    db.session.rollback()
    assert response.status_code == 200, response.text
    assert seen.statements == [CLAIM]
    assert seen.commits == 0  # no BEGIN/COMMIT round trips: the statement commits itself
    assert db.engine.pool.checkedout() == 0
    assert pooled_autocommit() and not any(pooled_autocommit())
    successor = response.get_json()["refresh_token"]
    assert family(token) == sorted([(token_hash(token), True), (token_hash(successor), False)])


def test_the_connection_is_given_back_before_the_answer_is_signed(pg_app, setup, monkeypatch):
    from sso.oidc import tokens

    client, portal, browser = setup
    token = first_token(client, portal, browser)
    held: list[int] = []
    real = tokens.issue_access_token

    def signing(*args: Any, **kwargs: Any) -> str:
        held.append(db.engine.pool.checkedout())
        return real(*args, **kwargs)

    monkeypatch.setattr(tokens, "issue_access_token", signing)
    assert refresh(client, portal, token).status_code == 200
    assert held == [0]  # no connection (nor transaction) held while signing


def test_a_failed_answer_undoes_the_claim(pg_app, setup, monkeypatch):
    from sso.oidc import tokens

    client, portal, browser = setup
    token = first_token(client, portal, browser)

    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("the signing key is unreadable")

    monkeypatch.setattr(tokens, "issue_access_token", broken)
    with recording(pg_app) as seen:
        failed = refresh(client, portal, token)
    db.session.rollback()
    assert failed.status_code == 500 and failed.get_json()["error"] == "server_error"
    assert seen.statements == [CLAIM, UNDO]
    # The token unused again, its successor gone: the retry is a refresh, not a reuse.
    assert family(token) == [(token_hash(token), False)]
    monkeypatch.undo()
    again = refresh(client, portal, token)
    assert again.status_code == 200, again.text
    reused = refresh(client, portal, token)
    assert reused.status_code == 400 and reused.get_json()["error"] == "invalid_grant"
    grant_id = db.session.get(RefreshToken, token_hash(token)).grant_id
    assert db.session.get(Grant, grant_id).revoked_reason == "refresh_reuse"


def test_an_undo_that_fails_leaves_the_first_answer(pg_app, setup, monkeypatch, caplog):
    import psycopg

    from sso.oidc import tokens

    client, portal, browser = setup
    token = first_token(client, portal, browser)

    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("the signing key is unreadable")

    def no_undo(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("WITH restored"):
            raise psycopg.errors.QueryCanceled("canceling statement due to user request")

    monkeypatch.setattr(tokens, "issue_access_token", broken)
    event.listen(db.engine, "before_cursor_execute", no_undo)
    try:
        with caplog.at_level(logging.WARNING, logger="sso.oidc"):
            failed = refresh(client, portal, token)
    finally:
        event.remove(db.engine, "before_cursor_execute", no_undo)
    assert failed.status_code == 500 and failed.get_json()["error"] == "server_error"
    assert "undoing a refresh token's claim failed: OperationalError" in caplog.text
    assert db.engine.pool.checkedout() == 0 and not any(pooled_autocommit())
    # The claim stands (the documented limit: the client's retry is a reuse).
    assert sorted(used for _, used in family(token)) == [False, True]


def test_a_failed_claim_spends_nothing_and_its_connection_is_discarded(pg_app, setup):
    """The statement fails after its connection was put in autocommit mode: that
    connection never goes back to the pool (neither in autocommit mode nor at all)."""
    import psycopg

    client, portal, browser = setup
    token = first_token(client, portal, browser)
    failed_on: list[Any] = []

    def cancel(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("WITH claimed"):
            failed_on.append(cursor.connection)
            assert cursor.connection.autocommit  # the hazard this test is about
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    event.listen(db.engine, "before_cursor_execute", cancel)
    try:
        failed = refresh(client, portal, token)
    finally:
        event.remove(db.engine, "before_cursor_execute", cancel)
    assert failed.status_code == 503 and failed.get_json()["error"] == "temporarily_unavailable"
    assert len(failed_on) == 1 and failed_on[0].closed
    rested = [record.dbapi_connection for record in list(db.engine.pool._pool.queue)]  # type: ignore[attr-defined]
    assert all(c is not failed_on[0] for c in rested) and not any(pooled_autocommit())
    assert family(token) == [(token_hash(token), False)]
    assert refresh(client, portal, token).status_code == 200


def test_a_grant_naming_cn_legal_person_goes_the_long_way(pg_app, setup):
    """Any grant whose scope names cn_legal_person, acting or not, is read and checked
    before it is claimed (the registry check must come before the token is spent)."""
    client, portal, browser = setup
    token = first_token(client, portal, browser)
    row = db.session.get(RefreshToken, token_hash(token))
    grant = db.session.get(Grant, row.grant_id)
    grant.scope = row.scope = "openid profile cn_legal_person"
    db.session.commit()
    with recording(pg_app) as seen:
        response = refresh(client, portal, token)
    db.session.rollback()
    assert response.status_code == 200, response.text
    assert seen.statements == [CLAIM, "SELECT refresh_tokens", CLAIM]
    assert seen.commits == 1
