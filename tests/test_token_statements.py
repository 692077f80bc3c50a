"""SQL per token request, exactly: a regression to ORM loading (lazy loads, reloads after
a commit, a second commit) shows up here as an extra statement.

Counted with SQLAlchemy engine events: every statement the request sends and every
commit.  The portal is looked up once beforehand (it is cached per process) and the
signing keys are re-read beforehand (they are re-read every few seconds), so neither
falls inside a measured request.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from sso.db import db
from tests.conftest import basic, redeem

_WRITES = re.compile(r"\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+\"?(\w+)", re.I)
_READ = re.compile(r"^\s*SELECT\b.*?\bFROM\s+\"?(\w+)", re.S | re.I)


def _kind(statement: str) -> str:
    """'SELECT t' for a read, 'UPDATE t', 'INSERT t' ... for writes, joined by '+' when a
    statement writes more than once (a data-modifying CTE)."""
    writes = [f"{verb.split(None, 1)[0].upper()} {table}" for verb, table in _WRITES.findall(statement)]
    if writes:
        return " + ".join(writes)
    read = _READ.match(statement)
    return f"SELECT {read.group(1)}" if read else statement.split(None, 1)[0].upper()


class Recorded:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.commits = 0


@contextmanager
def recording(app: Any) -> Iterator[Recorded]:
    app.extensions["sso"].keys.reload()  # not due again inside the measured request
    engine = db.engine
    seen = Recorded()

    def statement(conn: Any, cursor: Any, text: str, params: Any, context: Any, executemany: bool) -> None:
        seen.statements.append(_kind(text))

    def commit(conn: Any) -> None:
        seen.commits += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)


SQLITE_AUDIT_APPEND = ["UPDATE audit_chain_head", "INSERT audit_events", "UPDATE audit_chain_head"]


def refresh(client, portal, token):
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token}, headers=basic(portal))


def warm(client, portal) -> None:
    """The portal into the per-process client cache."""
    assert client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal)).status_code == 200


def test_code_exchange_is_five_statements_and_one_commit(app, browser, client, portal, account):
    code, verifier = browser.code_for(portal)
    warm(client, portal)
    with recording(app) as seen:
        response = redeem(client, portal, code, verifier)
    assert response.status_code == 200, response.text
    assert {"access_token", "id_token", "refresh_token"} <= set(response.get_json())
    # The grant (INSERT ... SELECT from its account: none if the account is gone), its
    # first refresh token and the sign-in's audit row (SQLite: the chain head taken,
    # the row, the head moved), committed together before anything is signed (a replay
    # of the code finds the grant from then on).
    assert seen.statements == ["INSERT grants", "INSERT refresh_tokens", *SQLITE_AUDIT_APPEND]
    assert seen.commits == 1


def test_code_exchange_for_a_deleted_account_writes_nothing(app, browser, client, portal, account):
    from sso.crypto import token_hash
    from sso.models import Account, Grant

    code, verifier = browser.code_for(portal)
    db.session.delete(db.session.get(Account, account.id))
    db.session.commit()
    response = redeem(client, portal, code, verifier)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
    assert db.session.execute(db.select(Grant).filter_by(code_hash=token_hash(code))).first() is None


def test_code_exchange_without_the_refresh_grant_stores_no_refresh_token(app, browser, client, account):
    from sso.clients import create_client
    from tests.conftest import Portal

    reg = create_client(
        name="Code only",
        client_id="code-only",
        redirect_uris=["https://portal.example.gov.cn/callback"],
        grant_types=["authorization_code"],
    )
    portal = Portal(reg.client.client_id, reg.client_secret)
    code, verifier = browser.code_for(portal)
    with recording(app) as seen:
        response = redeem(client, portal, code, verifier)
    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.get_json()
    assert "INSERT refresh_tokens" not in seen.statements
    assert seen.statements[-4:] == ["INSERT grants", *SQLITE_AUDIT_APPEND]
    assert seen.commits == 1


def test_refresh_is_three_statements_and_one_commit(app, browser, client, portal, account):
    code, verifier = browser.code_for(portal)
    first = redeem(client, portal, code, verifier).get_json()
    with recording(app) as seen:
        response = refresh(client, portal, first["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.get_json()["refresh_token"] != first["refresh_token"]
    # The token with its grant (one joined SELECT, no lazy load, no account load), the
    # claim, the successor; the claim and the successor commit together.
    assert seen.statements == ["SELECT refresh_tokens", "UPDATE refresh_tokens", "INSERT refresh_tokens"]
    assert seen.commits == 1


def test_client_credentials_touches_no_database(app, client, portal):
    warm(client, portal)
    with recording(app) as seen:
        response = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal))
    assert response.status_code == 200, response.text
    assert seen.statements == [] and seen.commits == 0
