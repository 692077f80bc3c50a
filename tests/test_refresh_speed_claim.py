"""Refresh on PostgreSQL: the claim made after the answer is signed, and the tokens a
process remembers issuing (``sso.oidc.grants.ISSUED``).

The usual refresh reads the token (or takes it from what this process remembers
issuing), signs the answer, and only then claims the token and stores its successor
in one statement that commits by itself.  Whatever changed between what was known
and the claim — a concurrent use, a revocation, a disabled account — the claim stores
nothing and the answer is the long way's: the same errors, and reuse revokes the
family.  Each case runs with the token remembered and with it read (as another
process, which never issued it, would).
"""

# ruff: noqa: F811  (the fixtures imported from test_refresh_postgres)
from __future__ import annotations

from typing import Any

import pytest

from sso.crypto import token_hash
from sso.db import db
from sso.models import Account, Grant, RefreshToken, utcnow
from sso.oidc import grants, tokens
from tests.backends import pg_url  # noqa: F401  (fixture)
from tests.test_refresh_postgres import first_tokens, pg_app, refresh, setup  # noqa: F401  (fixtures)
from tests.test_token_statements import recording

pytestmark = pytest.mark.postgres


def _family(grant_id: str) -> list[RefreshToken]:
    rows = db.session.execute(db.select(RefreshToken).filter_by(grant_id=grant_id)).scalars().all()
    db.session.rollback()
    return rows


def _start(setup: Any, remembered: bool) -> tuple[Any, Any, str, str]:
    client, portal, browser = setup
    token = first_tokens(client, portal, browser)["refresh_token"]
    grant_id = db.session.get(RefreshToken, token_hash(token)).grant_id
    db.session.rollback()
    if not remembered:
        grants.ISSUED.clear()
    return client, portal, token, grant_id


@pytest.mark.parametrize("remembered", [True, False])
def test_the_usual_refresh_is_one_statement_when_remembered_two_when_read(pg_app, setup, remembered):
    client, portal, token, grant_id = _start(setup, remembered)
    with recording(pg_app) as seen:
        ok = refresh(client, portal, token)
    assert ok.status_code == 200, ok.text
    claim = "UPDATE refresh_tokens + INSERT refresh_tokens"
    assert seen.statements == ([claim] if remembered else ["SELECT refresh_tokens", claim])
    assert seen.commits == 0  # the claim commits by itself
    rows = _family(grant_id)
    assert sorted(row.used_at is None for row in rows) == [False, True]
    successor = next(row for row in rows if row.used_at is None)
    assert successor.token_hash == token_hash(ok.get_json()["refresh_token"])
    # The successor, remembered in turn, rotates again.
    again = refresh(client, portal, ok.get_json()["refresh_token"])
    assert again.status_code == 200, again.text


@pytest.mark.parametrize("remembered", [True, False])
def test_a_use_between_the_read_and_the_claim_is_reuse(pg_app, setup, monkeypatch, remembered):
    """Another request (or process) spent the token while this one signed: this one
    stores nothing, answers invalid_grant, and the family is revoked as for any reuse."""
    client, portal, token, grant_id = _start(setup, remembered)
    recorded: list[tuple[str, Any]] = []
    from sso import audit

    monkeypatch.setattr(audit, "record", lambda event, **kw: recorded.append((event, kw.get("grant"))))
    real = tokens.issue_access_token

    def meanwhile(*args: Any, **kwargs: Any) -> str:
        with pg_app.app_context():  # another request's own session
            db.session.execute(
                db.update(RefreshToken).where(RefreshToken.token_hash == token_hash(token)).values(used_at=utcnow())
            )
            db.session.commit()
        return real(*args, **kwargs)

    monkeypatch.setattr(tokens, "issue_access_token", meanwhile)
    lost = refresh(client, portal, token)
    assert lost.status_code == 400
    assert lost.get_json() == {"error": "invalid_grant", "error_description": "invalid_grant"}
    assert [row.token_hash for row in _family(grant_id)] == [token_hash(token)]  # no successor
    assert db.session.get(Grant, grant_id).revoked_reason == "refresh_reuse"
    assert recorded == [("token.refresh_reuse", grant_id)]


@pytest.mark.parametrize("remembered", [True, False])
def test_a_grant_revoked_between_the_read_and_the_claim_stores_nothing(pg_app, setup, monkeypatch, remembered):
    client, portal, token, grant_id = _start(setup, remembered)
    real = tokens.issue_access_token

    def meanwhile(*args: Any, **kwargs: Any) -> str:
        with pg_app.app_context():  # a logout, committed while this request signs
            revoked = {"revoked_at": utcnow(), "revoked_reason": "logout"}
            db.session.execute(db.update(Grant).where(Grant.id == grant_id).values(**revoked))
            db.session.commit()
        return real(*args, **kwargs)

    monkeypatch.setattr(tokens, "issue_access_token", meanwhile)
    lost = refresh(client, portal, token)
    assert lost.status_code == 400 and lost.get_json()["error"] == "invalid_grant"
    assert [row.used_at for row in _family(grant_id)] == [None]  # neither claimed nor replaced
    assert db.session.get(Grant, grant_id).revoked_reason == "logout"


@pytest.mark.parametrize("remembered", [True, False])
def test_a_disabled_account_is_refused_with_the_long_ways_words(pg_app, setup, remembered):
    client, portal, token, grant_id = _start(setup, remembered)
    grant = db.session.get(Grant, grant_id)
    db.session.get(Account, grant.account_id).status = "disabled"
    db.session.commit()
    refused = refresh(client, portal, token)
    assert refused.status_code == 400
    assert refused.get_json() == {
        "error": "invalid_grant",
        "error_description": "The account of this refresh token is not active.",
    }
    assert [row.used_at for row in _family(grant_id)] == [None]


@pytest.mark.parametrize("remembered", [True, False])
def test_a_rotated_token_presented_again_revokes_the_family(pg_app, setup, remembered):
    client, portal, token, grant_id = _start(setup, remembered)
    assert refresh(client, portal, token).status_code == 200
    if remembered:
        # As if it had come back to a process still remembering it (issued there, used elsewhere).
        presented = grants.RefreshCredential(token_hash(token), _row(grant_id))
        grants.ISSUED.put(token_hash(token), portal.client_id, presented)
    reuse = refresh(client, portal, token)
    assert reuse.status_code == 400 and reuse.get_json()["error"] == "invalid_grant"
    db.session.expire_all()
    assert db.session.get(Grant, grant_id).revoked_reason == "refresh_reuse"
    assert len(_family(grant_id)) == 2  # nothing stored for the replay


def _row(grant_id: str) -> tuple[Any, ...]:
    grant = db.session.get(Grant, grant_id)
    row = (
        grant.client_id, grant.scope, grant.expires_at, None, grant.id, grant.account_id, grant.scope,
        grant.sid, grant.auth_time, grant.acr, grant.amr, grant.acting, grant.expires_at, None,
    )  # fmt: skip
    db.session.rollback()
    return row


def test_another_clients_remembered_token_spends_nothing(pg_app, setup):
    from sso.clients import create_client

    client, portal, token, grant_id = _start(setup, True)
    other = create_client(name="Other", client_id="other-portal", redirect_uris=["https://o.example.gov.cn/cb"])
    from tests.conftest import Portal, basic

    stranger = Portal(other.client.client_id, other.client_secret)
    answer = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": token}, headers=basic(stranger)
    )
    assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_grant"
    assert [row.used_at for row in _family(grant_id)] == [None]
    assert refresh(client, portal, token).status_code == 200  # its own client still can
