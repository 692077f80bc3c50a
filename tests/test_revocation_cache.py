"""The per-process revocation cache (sso.revocations): cheap introspection and userinfo,
and "revoked means inactive at once, on every instance" kept.

Every revocation path is driven as a portal or a person drives it, after the cache
holds the token as active; the very next introspection and userinfo must refuse it.
Then the write forms the central hook must see (including ones no code uses today),
the reader/revocation race, two app instances over a real Redis pub/sub, the
subscription going down, and two real ``sso serve`` processes.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
import requests
from flask import Flask
from sqlalchemy import delete, event, insert, text, update

from sso import create_app, revocations
from sso.bootstrap import prepare
from sso.clients import create_client, delete_client
from sso.connectors.local import create_account
from sso.db import db
from sso.models import Account, Consent, Grant, RevokedAccessToken, utcnow
from sso.oidc.endpoints import validate_access_token
from sso.revocations import ALL, GrantFacts, RevocationCache
from tests.backends import pg_url, redis_url  # noqa: F401  (fixtures for `pair`)
from tests.conftest import (
    PASSWORD,
    REDIRECT,
    USERNAME,
    Browser,
    IsolatedClient,
    Portal,
    basic,
    csrf_from,
    make_settings,
    redeem,
)
from tests.e2e.test_two_instances import pair  # noqa: F401  (fixture: two `sso serve` processes)
from tests.test_legal_person import ent_portal, registry_db, zhang  # noqa: F401  (fixtures)

# ---- helpers ---------------------------------------------------------------------------


def claims_of(token: str) -> dict[str, Any]:
    return pyjwt.decode(token, options={"verify_signature": False})


def cache(app: Flask) -> RevocationCache:
    return revocations.cache_of(app)


def introspect(client: Any, portal: Portal, token: str) -> dict[str, Any]:
    response = client.post("/introspect", data={"token": token}, headers=basic(portal))
    assert response.status_code == 200, response.text
    return response.get_json()  # type: ignore[no-any-return]


def userinfo(client: Any, token: str) -> Any:
    return client.get("/userinfo", headers={"Authorization": "Bearer " + token})


def tokens_for(browser: Browser, client: Any, portal: Portal) -> dict[str, Any]:
    code, verifier = browser.code_for(portal)
    response = redeem(client, portal, code, verifier)
    assert response.status_code == 200, response.text
    return response.get_json()  # type: ignore[no-any-return]


def cached(app: Flask, access_token: str) -> bool:
    c = claims_of(access_token)
    return cache(app).grant(c["gid"], c["jti"]) is not None


def warm(app: Flask, client: Any, portal: Portal, access_token: str) -> None:
    """Introspection and userinfo say active, and the cache now holds the answer."""
    assert introspect(client, portal, access_token)["active"] is True
    assert userinfo(client, access_token).status_code == 200
    assert cached(app, access_token)


def assert_refused(client: Any, portal: Portal | None, access_token: str) -> None:
    if portal is not None:
        assert introspect(client, portal, access_token) == {"active": False}
    response = userinfo(client, access_token)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def inactive(app: Flask, access_token: str) -> bool:
    with app.test_request_context():
        return validate_access_token(access_token) is None


@contextlib.contextmanager
def counting_sql(app: Flask) -> Iterator[list[str]]:
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


# ---- the cache answers, without SQL ---------------------------------------------------------


def test_a_cache_hit_makes_no_sql(app, browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    access = tokens["access_token"]
    assert introspect(client, portal, access)["active"] is True  # the portal is cached now too
    cache(app).clear()
    with counting_sql(app) as miss:
        assert introspect(client, portal, access)["active"] is True
    assert len(miss) == 1  # the grant and the revocation list, in one statement
    with counting_sql(app) as hit:
        body = introspect(client, portal, access)
    assert body["active"] is True and body["client_id"] == portal.client_id
    assert hit == []
    assert userinfo(client, access).status_code == 200  # reads the account once...
    with counting_sql(app) as info:
        response = userinfo(client, access)
    assert response.status_code == 200 and response.get_json()["name"] == "Alice"
    assert info == []  # ...then grant and account both come from the cache
    assert cache(app).stats["hits"] >= 3


def test_client_credentials_tokens_are_cached_by_jti(app, client, portal):
    response = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal))
    access = response.get_json()["access_token"]
    assert introspect(client, portal, access)["active"] is True
    with counting_sql(app) as hit:
        assert introspect(client, portal, access)["active"] is True
    assert hit == []
    assert client.post("/revoke", data={"token": access}, headers=basic(portal)).status_code == 200
    assert introspect(client, portal, access) == {"active": False}


def test_a_withdrawn_signing_key_ends_tokens_verified_before(app, browser, client, portal, account):
    from sso.models import SigningKey

    access = tokens_for(browser, client, portal)["access_token"]
    warm(app, client, portal, access)  # signature verified once, remembered with the key set
    keys = app.extensions["sso"].keys
    old_kid = pyjwt.get_unverified_header(access)["kid"]
    keys.rotate("RS256", activate_in=0)
    db.session.execute(delete(SigningKey).where(SigningKey.kid == old_kid))
    db.session.commit()
    keys.reload()
    assert cached(app, access)  # "not revoked" is still remembered, but...
    assert inactive(app, access)  # ...the signature no longer checks out
    assert introspect(client, portal, access) == {"active": False}


def test_ttl_zero_asks_the_database_every_time(tmp_path, monkeypatch):
    application = create_app(make_settings(tmp_path, revocation_cache_ttl=0))
    application.test_client_class = IsolatedClient
    prepare(application)
    with application.app_context():
        reg = create_client(name="P", client_id="p", redirect_uris=[REDIRECT], grant_types=["client_credentials"])
        portal = Portal("p", reg.client_secret)
        http = application.test_client()
        access = http.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal)).get_json()
        assert introspect(http, portal, access["access_token"])["active"] is True
        for _ in range(3):
            with counting_sql(application) as statements:
                assert introspect(http, portal, access["access_token"])["active"] is True
            assert len(statements) == 1
        assert len(cache(application)) == 0


def test_entries_expire_after_the_ttl(app, browser, client, portal, account, monkeypatch):
    access = tokens_for(browser, client, portal)["access_token"]
    warm(app, client, portal, access)
    later = time.monotonic() + app.extensions["sso"].settings.revocation_cache_ttl + 1
    monkeypatch.setattr(revocations.time, "monotonic", lambda: later)
    assert not cached(app, access)


def test_the_cache_is_bounded():
    small = RevocationCache(30, max_entries=3)
    for i in range(10):
        small.store(small.ticket(), f"j{i}", GrantFacts(f"g{i}", "a", None, "s", "c"))
    assert len(small._grants) == 3 and len(small._jtis) == 3
    assert small.grant("g9", "j9") is not None and small.grant("g0", "j0") is None
    small.forget([("grant", (("sid", "s"),))])
    assert small._grants == {} and small._index == {}


# ---- every revocation path, on the same process ----------------------------------------------


def test_logout_revokes_at_once(app, browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    warm(app, client, portal, tokens["access_token"])
    bye = client.get(
        "/logout",
        query_string={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "https://portal.example.gov.cn/bye",
        },
    )
    assert bye.status_code == 302
    assert_refused(client, portal, tokens["access_token"])


def test_logout_forgets_only_that_session(app, client, portal, account):
    one, two = Browser(app.test_client()), Browser(app.test_client())
    first, second = tokens_for(one, one.client, portal), tokens_for(two, two.client, portal)
    warm(app, client, portal, first["access_token"])
    warm(app, client, portal, second["access_token"])
    one.client.get(
        "/logout",
        query_string={
            "id_token_hint": first["id_token"],
            "post_logout_redirect_uri": "https://portal.example.gov.cn/bye",
        },
    )
    assert not cached(app, first["access_token"])
    assert cached(app, second["access_token"])  # another browser's session: still remembered
    assert_refused(client, portal, first["access_token"])
    assert introspect(client, portal, second["access_token"])["active"] is True


def test_withdrawing_consent_revokes_at_once(app, browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    warm(app, client, portal, tokens["access_token"])
    page = client.get("/account")
    assert page.status_code == 200
    response = client.post(
        "/account/consents/revoke", data={"csrf_token": csrf_from(page.text), "client_id": portal.client_id}
    )
    assert response.status_code == 302
    assert_refused(client, portal, tokens["access_token"])


def test_deleting_the_portal_revokes_at_once(app, browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    warm(app, client, portal, tokens["access_token"])
    delete_client(portal.client_id)
    assert not cached(app, tokens["access_token"])
    assert inactive(app, tokens["access_token"])
    assert_refused(client, None, tokens["access_token"])  # the portal cannot introspect any more


def test_refresh_token_reuse_revokes_at_once(app, browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = client.post("/token", data=refresh, headers=basic(portal)).get_json()
    warm(app, client, portal, second["access_token"])
    reuse = client.post("/token", data=refresh, headers=basic(portal))
    assert reuse.status_code == 400 and reuse.get_json()["error"] == "invalid_grant"
    assert_refused(client, portal, second["access_token"])


def test_code_replay_revokes_at_once(app, browser, client, portal, account):
    code, verifier = browser.code_for(portal)
    tokens = redeem(client, portal, code, verifier).get_json()
    warm(app, client, portal, tokens["access_token"])
    replay = redeem(client, portal, code, verifier)
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"
    assert_refused(client, portal, tokens["access_token"])


def test_rfc7009_revoking_the_access_token_at_once(app, browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    warm(app, client, portal, tokens["access_token"])
    assert client.post("/revoke", data={"token": tokens["access_token"]}, headers=basic(portal)).status_code == 200
    assert_refused(client, portal, tokens["access_token"])


def test_rfc7009_revoking_the_refresh_token_at_once(app, browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    warm(app, client, portal, tokens["access_token"])
    response = client.post(
        "/revoke", data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"}, headers=basic(portal)
    )
    assert response.status_code == 200
    assert_refused(client, portal, tokens["access_token"])


def test_a_disabled_account_is_refused_by_userinfo_at_once(app, browser, client, portal, account):
    access = tokens_for(browser, client, portal)["access_token"]
    warm(app, client, portal, access)
    assert userinfo(client, access).get_json()["name"] == "Alice"
    assert cache(app).account(account.id) is not None
    row = db.session.get(Account, account.id)
    row.display_name = "Alice Renamed"
    db.session.commit()
    assert userinfo(client, access).get_json()["name"] == "Alice Renamed"  # the new row, at once
    row = db.session.get(Account, account.id)
    row.status = "disabled"
    db.session.commit()
    response = userinfo(client, access)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"


# ---- the central hook sees every form of write, only once it commits --------------------------


def _orm_attribute(grant: Grant, token: dict[str, Any]) -> None:
    grant.revoked_at = utcnow()


def _bulk(where: Any) -> Any:
    def write(grant: Grant, token: dict[str, Any]) -> None:
        db.session.execute(
            update(Grant)
            .where(*where(grant), Grant.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason="x")
        )

    return write


def _raw_text(grant: Grant, token: dict[str, Any]) -> None:
    db.session.execute(text("UPDATE grants SET revoked_at = CURRENT_TIMESTAMP WHERE id = :g"), {"g": grant.id})


def _orm_delete(grant: Grant, token: dict[str, Any]) -> None:
    db.session.delete(grant)


def _account_deleted(grant: Grant, token: dict[str, Any]) -> None:
    db.session.execute(delete(Account).where(Account.id == grant.account_id))


def _jti_orm(grant: Grant, token: dict[str, Any]) -> None:
    db.session.add(RevokedAccessToken(jti=token["jti"], expires_at=datetime.utcfromtimestamp(token["exp"])))


def _jti_core(grant: Grant, token: dict[str, Any]) -> None:
    db.session.execute(
        insert(RevokedAccessToken).values(jti=token["jti"], expires_at=datetime.utcfromtimestamp(token["exp"]))
    )


WRITES = {
    "orm attribute": _orm_attribute,
    "bulk by id": _bulk(lambda g: [Grant.id == g.id]),
    "bulk by id IN": _bulk(lambda g: [Grant.id.in_([g.id, "another"])]),
    "bulk by session": _bulk(lambda g: [Grant.sid == g.sid]),
    "bulk by portal": _bulk(lambda g: [Grant.client_id == g.client_id]),
    "bulk by account and portal": _bulk(lambda g: [Grant.account_id == g.account_id, Grant.client_id == g.client_id]),
    "bulk by something unreadable": _bulk(lambda g: [Grant.created_at <= utcnow() + timedelta(days=1)]),
    "bulk with an OR": _bulk(lambda g: [(Grant.id == g.id) | (Grant.sid == "nobody")]),
    "raw SQL text": _raw_text,
    "orm delete": _orm_delete,
    "account deleted (cascade)": _account_deleted,
    "revocation list, orm": _jti_orm,
    "revocation list, core insert": _jti_core,
}


@pytest.mark.parametrize("form", list(WRITES))
def test_every_form_of_write_is_seen_after_commit(app, browser, client, portal, account, form):
    tokens = tokens_for(browser, client, portal)
    access = tokens["access_token"]
    warm(app, client, portal, access)
    token = claims_of(access)
    grant = db.session.get(Grant, token["gid"])
    WRITES[form](grant, token)
    db.session.flush()
    assert cached(app, access)  # written, not committed: nothing is revoked yet
    db.session.commit()
    assert not cached(app, access)
    assert inactive(app, access)
    assert_refused(client, portal, access)


def test_core_statements_outside_a_session_are_seen(app, browser, client, portal, account):
    access = tokens_for(browser, client, portal)["access_token"]
    warm(app, client, portal, access)
    with db.engine.begin() as conn:
        conn.execute(
            update(Grant.__table__).where(Grant.__table__.c.id == claims_of(access)["gid"]).values(revoked_at=utcnow())
        )
    assert not cached(app, access)
    assert_refused(client, portal, access)


def test_a_rolled_back_revocation_forgets_nothing(app, browser, client, portal, account):
    access = tokens_for(browser, client, portal)["access_token"]
    warm(app, client, portal, access)
    before = cache(app).stats["invalidations"]
    db.session.execute(update(Grant).values(revoked_at=utcnow()))
    db.session.rollback()
    assert cache(app).stats["invalidations"] == before
    assert cached(app, access)
    assert introspect(client, portal, access)["active"] is True


def test_other_writes_forget_nothing(app, browser, client, portal, account):
    access = tokens_for(browser, client, portal)["access_token"]
    warm(app, client, portal, access)
    before = cache(app).stats["invalidations"]
    # Everyday writes: a new grant (another sign-in), a refresh rotation, a consent.
    tokens = tokens_for(browser, client, portal)
    client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, headers=basic(portal)
    )
    db.session.execute(update(Consent).values(scopes=["openid", "profile"]))
    db.session.commit()
    assert cache(app).stats["invalidations"] == before
    assert cached(app, access)


def test_the_statement_reader(app):
    def keys(stmt: Any) -> list[Any]:
        compiled = stmt.compile(dialect=db.engine.dialect)
        kind = "insert" if stmt.is_insert else "update" if stmt.is_update else "delete"
        return revocations.changes_of(kind, compiled.statement, [compiled.construct_params()], compiled.bind_names)

    values = {"revoked_at": utcnow()}
    assert keys(update(Grant).where(Grant.sid == "s1").values(**values)) == [("grant", (("sid", "s1"),))]
    assert keys(update(Grant).where(Grant.account_id == "a", Grant.client_id == "c").values(**values)) == [
        ("grant", (("client_id", "c"), ("account_id", "a")))
    ]
    assert keys(update(Grant).values(**values)) == [ALL]  # no WHERE: every grant
    assert keys(delete(Account).where(Account.id == "a")) == [("account", "a"), ("grant", (("account_id", "a"),))]
    assert keys(update(Account).where(Account.id == "a").values(status="disabled")) == [("account", "a")]
    assert keys(update(Account).values(status="disabled")) == [ALL]
    assert keys(delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < utcnow())) == []


def test_no_database_access_bypasses_sqlalchemy():
    """The hook sits on every SQLAlchemy engine: a write through a raw DB-API connection
    would bypass it.  The one way to the driver is sso.db.driver_execute (its DriverSQL
    refuses statements that write the tracked tables); a new one in the gateway's code
    must come with its invalidation."""
    root = Path(__file__).resolve().parent.parent / "sso"
    raw = re.compile(
        r"sqlite3\.connect|psycopg2?\.connect|\.raw_connection\(|\.dbapi_connection\b|\.driver_connection\b"
    )
    found = {
        f"{path.relative_to(root.parent)}: {line.strip()}"
        for path in root.rglob("*.py")
        if "migrations" not in path.parts
        for line in path.read_text(encoding="utf-8").splitlines()
        if raw.search(line)
    }
    assert found == {"sso/db.py: cursor = connection.connection.driver_connection.cursor()"}, found


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE grants SET revoked_at = now()",
        "update public.grants set revoked_at = now()",
        'UPDATE "accounts" SET status = %(s)s',
        "DELETE FROM only grants",
        "TRUNCATE TABLE revoked_access_tokens",
        "WITH c AS (UPDATE refresh_tokens SET used_at = now() RETURNING grant_id) UPDATE grants SET scope = ''",
    ],
)
def test_driver_statements_cannot_write_tracked_tables(sql):
    from sso.db import DriverSQL

    with pytest.raises(ValueError):
        DriverSQL(sql)


def test_driver_statements_may_write_other_tables_while_reading_tracked_ones():
    # The refresh claim: UPDATE refresh_tokens ... FROM grants, accounts (sso.oidc.grants).
    from sso.db import DriverSQL
    from sso.oidc.grants import _CLAIM_AT_ONCE_SQL

    assert "FROM grants, accounts" in _CLAIM_AT_ONCE_SQL
    DriverSQL("UPDATE refresh_tokens SET used_at = now() FROM grants WHERE grants.id = refresh_tokens.grant_id")
    DriverSQL("UPDATE sessions SET grants_count = 1")


# ---- the reader that read "active" just before a revocation committed --------------------------


def test_a_stale_read_is_never_stored(app, browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    token = claims_of(tokens["access_token"])
    c = cache(app)
    ticket = c.ticket()  # a reader takes its ticket, then reads the grant: active
    row = db.session.get(Grant, token["gid"])
    facts = GrantFacts(row.id, row.account_id, row.acting, row.sid, row.client_id)
    db.session.rollback()
    # ...meanwhile the refresh token is revoked (the grant with it) and commits...
    response = client.post(
        "/revoke", data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"}, headers=basic(portal)
    )
    assert response.status_code == 200
    c.store(ticket, token["jti"], facts)  # ...then the reader stores what it read
    assert c.grant(token["gid"], token["jti"]) is None
    assert_refused(client, portal, tokens["access_token"])
    # The same store with a ticket taken after the revocation would be kept (the guard is the ticket).
    c.store(c.ticket(), token["jti"], facts)
    assert c.grant(token["gid"], token["jti"]) is not None


# ---- legal persons: the registry is asked every time ----------------------------------------------


def test_legal_person_tokens_keep_their_registry_check(app, browser, client, zhang, ent_portal, registry_db):  # noqa: F811
    from sso.connectors.demo_data import DEMO_CITIZEN
    from tests.test_legal_person import CODE, ZHANG_PASSWORD, legal_tokens

    tokens = legal_tokens(browser, client, ent_portal, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    access = tokens["access_token"]
    assert introspect(client, ent_portal, access)["active"] is True
    assert introspect(client, ent_portal, access)["active"] is True
    assert cached(app, access)  # the grant is remembered...
    registry_db(CODE, "revoked")  # ...but the registry is asked on every request
    assert introspect(client, ent_portal, access) == {"active": False}
    assert userinfo(client, access).status_code == 401


# ---- two app instances, separate caches, a real Redis ----------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    from tests.storage.test_redis_faults import private_redis

    with private_redis(tmp_path / "redis") as server:
        yield server


def wait_until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.fixture
def fleet(tmp_path: Path, redis_server: Any) -> Iterator[tuple[Flask, Flask, Portal]]:
    settings = make_settings(tmp_path, redis_url=redis_server.url)
    apps = []
    for _ in range(2):
        application = create_app(settings)
        application.test_client_class = IsolatedClient
        apps.append(application)
    a, b = apps
    prepare(a)
    with a.app_context():
        reg = create_client(
            name="Tax",
            client_id="tax-portal",
            redirect_uris=[REDIRECT],
            post_logout_redirect_uris=["https://portal.example.gov.cn/bye"],
        )
        create_account(USERNAME, PASSWORD, "Alice")
    for application in apps:
        with application.app_context():
            cache(application).ticket()  # the first reader starts the subscriber
    wait_until(lambda: cache(a).live() and cache(b).live())
    try:
        yield a, b, Portal("tax-portal", reg.client_secret)
    finally:
        for application in apps:
            cache(application).close()
            application.extensions["sso"].store.close()


@pytest.mark.redis
@pytest.mark.parametrize("path", ["access token", "refresh token", "logout"])
def test_a_revocation_through_one_instance_is_seen_by_the_other_at_once(fleet, path):
    a, b, portal = fleet
    at_a, at_b = a.test_client(), b.test_client()
    for _ in range(5):  # several rounds: no luck in the timing
        tokens = tokens_for(Browser(at_a), at_a, portal)
        access = tokens["access_token"]
        warm(b, at_b, portal, access)
        if path == "access token":
            at_a.post("/revoke", data={"token": access}, headers=basic(portal))
        elif path == "refresh token":
            at_a.post("/revoke", data={"token": tokens["refresh_token"]}, headers=basic(portal))
        else:
            at_a.get(
                "/logout",
                query_string={
                    "id_token_hint": tokens["id_token"],
                    "post_logout_redirect_uri": "https://portal.example.gov.cn/bye",
                },
            )
        assert_refused(at_b, portal, access)  # immediately: B acknowledged before A answered
    assert cache(a).stats["acks_missing"] == 0


@pytest.mark.redis
def test_an_account_disabled_through_one_instance_is_refused_by_the_other_at_once(fleet):
    a, b, portal = fleet
    at_a, at_b = a.test_client(), b.test_client()
    access = tokens_for(Browser(at_a), at_a, portal)["access_token"]
    warm(b, at_b, portal, access)
    with a.app_context():
        row = db.session.execute(db.select(Account).filter_by(username=USERNAME)).scalar_one()
        assert cache(b).account(row.id) is not None
        row.status = "disabled"
        db.session.commit()
    response = userinfo(at_b, access)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"


@pytest.mark.redis
def test_a_lost_subscription_falls_back_to_the_database(fleet, redis_server):
    a, b, portal = fleet
    at_a, at_b = a.test_client(), b.test_client()
    first, second = (tokens_for(Browser(at_a), at_a, portal) for _ in range(2))
    warm(b, at_b, portal, first["access_token"])
    warm(b, at_b, portal, second["access_token"])

    redis_server.stop()
    wait_until(lambda: not cache(b).live())
    with counting_sql(b) as statements:
        assert introspect(at_b, portal, first["access_token"])["active"] is True
    assert len(statements) == 1  # from the database, as without the cache
    # Revoked through A while nobody can hear it: B is right all the same.
    with a.app_context():
        grant = db.session.get(Grant, claims_of(first["access_token"])["gid"])
        grant.revoked_at = utcnow()
        db.session.commit()
    assert inactive(b, first["access_token"])
    assert introspect(at_b, portal, first["access_token"]) == {"active": False}

    redis_server.start()
    wait_until(lambda: cache(b).live())
    # Resubscribed: everything remembered before was forgotten first.
    assert not cached(b, second["access_token"])
    assert introspect(at_b, portal, first["access_token"]) == {"active": False}
    warm(b, at_b, portal, second["access_token"])


@pytest.mark.redis
def test_a_silent_subscription_stops_being_trusted(fleet, redis_server):
    a, b, portal = fleet
    at_a, at_b = a.test_client(), b.test_client()
    access = tokens_for(Browser(at_a), at_a, portal)["access_token"]
    warm(b, at_b, portal, access)
    redis_server.freeze()  # no EOF, no pongs: only the pulse tells
    try:
        started = time.monotonic()
        wait_until(lambda: not cache(b).live(), timeout=revocations.LIVENESS + 5)
        assert time.monotonic() - started <= revocations.LIVENESS + 1
        assert not cached(b, access)
    finally:
        redis_server.thaw()
    wait_until(lambda: cache(b).live())


# ---- two real processes --------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_two_processes_revocation_is_seen_at_once(pair):  # noqa: F811
    from tests.e2e.conftest import PASSWORD, TIMEOUT, USERNAME
    from tests.e2e.conftest import Browser as HttpBrowser
    from tests.e2e.test_two_instances import _authorize_url, _redeem, _register, query_of

    a, b = pair
    a.gateway.cli("accounts", "create", "--username", USERNAME, "--name", "双实例", "--password", PASSWORD)
    client = _register(a)
    browser = HttpBrowser(a.gateway.issuer)
    auth = (client["client_id"], client["client_secret"])
    for round_ in range(3):
        url, verifier = _authorize_url(a.url, client, **({"prompt": "none"} if round_ else {}))
        location = (
            browser.authorize(url, client["redirect_uri"]) if not round_ else browser.get(url).headers["Location"]
        )
        tokens = _redeem(a.url, client, query_of(location)["code"], verifier)
        access = tokens["access_token"]
        for _ in range(2):  # the second answer comes from B's cache
            body = requests.post(b.url + "/introspect", data={"token": access}, auth=auth, timeout=TIMEOUT).json()
            assert body["active"] is True
        revoked = requests.post(a.url + "/revoke", data={"token": tokens["refresh_token"]}, auth=auth, timeout=TIMEOUT)
        assert revoked.status_code == 200
        body = requests.post(b.url + "/introspect", data={"token": access}, auth=auth, timeout=TIMEOUT).json()
        assert body == {"active": False}
        info = requests.get(b.url + "/userinfo", headers={"Authorization": "Bearer " + access}, timeout=TIMEOUT)
        assert info.status_code == 401 and info.json()["error"] == "invalid_token"
