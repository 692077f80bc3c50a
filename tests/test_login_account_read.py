"""The password login reads just the columns it needs, without the ORM (sso.accounts.login_account).

A Core read (SQLite), or on PostgreSQL the same read straight on psycopg in the
session's transaction; a rehash at new argon2 parameters is an UPDATE through
SQLAlchemy (so revocation tracking sees it), committed.  Whatever path it takes,
the answers are those of the ORM lookup (sso.accounts.find_by_login_name): the
same account for every kind of login name, the same Identity, and an unknown,
disabled or wrong login costs one argon2 verification and answers None.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from sqlalchemy import event

from sso import create_app
from sso.accounts import (
    LoginAccount,
    find_by_id_number,
    find_by_login_name,
    login_account,
    register_citizen,
    verify_real_name,
)
from sso.bootstrap import prepare
from sso.connectors import local
from sso.connectors.demo_data import DEMO_CITIZEN
from sso.connectors.sqlregistry import seed_demo_registry, url_for_path
from sso.db import db
from sso.models import Account
from tests.backends import pg_url  # noqa: F401 - fixture
from tests.conftest import IsolatedClient, make_settings

CITIZEN_PASSWORD = "Zhang-San-2026"
LOCAL_PASSWORD = "correct horse battery staple"
# A username shaped like a mobile number that no account has as its phone.
PHONE_SHAPED_USERNAME = "13912345678"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    overrides: dict[str, Any] = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("pg_url")
    seed_demo_registry(url_for_path(str(tmp_path / "instance" / "registry.sqlite3")))
    app = create_app(make_settings(tmp_path, **overrides))
    app.test_client_class = IsolatedClient
    prepare(app)
    with app.app_context():
        if find_by_id_number(DEMO_CITIZEN.id_number) is None:
            register_citizen(verify_real_name(DEMO_CITIZEN.name, DEMO_CITIZEN.id_number), CITIZEN_PASSWORD, None)
        # The citizen's phone is bound to the account that has it; this one logs in by a phone-shaped username.
        local.create_account(PHONE_SHAPED_USERNAME, LOCAL_PASSWORD, "Phone-shaped")
        citizen = find_by_id_number(DEMO_CITIZEN.id_number)
        assert citizen is not None
        citizen.phone = DEMO_CITIZEN.phone
        db.session.commit()
        yield app
        db.session.remove()
        if request.param == "postgres":
            db.engine.dispose()


@contextlib.contextmanager
def statements(app: Flask) -> Iterator[list[tuple[str, bool]]]:
    """Every statement run: (SQL, whether it went through SQLAlchemy's execution)."""
    seen: list[tuple[str, bool]] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        seen.append((statement, context is not None))

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", before)


def _logins() -> list[str]:
    return [
        DEMO_CITIZEN.id_number,
        DEMO_CITIZEN.id_number.lower(),  # a lowercase x, if it has one
        DEMO_CITIZEN.phone,
        PHONE_SHAPED_USERNAME,  # phone-shaped: by phone first (none), then by username
        f"  {PHONE_SHAPED_USERNAME} ",
        "nobody-here",
        "",
        "x" * 65,
        "1" * 18,  # 18 characters but not a valid number: by username
    ]


def test_login_account_reads_what_the_orm_lookup_finds(gateway: Flask):
    for login in _logins():
        orm = find_by_login_name(login)
        read = login_account(login)
        if orm is None:
            assert read is None, login
            continue
        assert isinstance(read, LoginAccount)
        assert read == LoginAccount(**{name: getattr(orm, name) for name in LoginAccount.__dataclass_fields__})
        db.session.rollback()
    # The registry-verified citizen: attributes and a timestamp read back as the ORM reads them.
    citizen = login_account(DEMO_CITIZEN.phone)
    assert citizen is not None and citizen.assurance == "registry-verified"
    assert isinstance(citizen.verified_attributes, dict) and citizen.verified_attributes["name"] == DEMO_CITIZEN.name
    assert citizen.verified_at is not None and citizen.verified_at.tzinfo is None


def test_login_reads_just_its_columns_and_on_postgres_straight_on_psycopg(gateway: Flask):
    connector = local.LocalAccounts()
    db.session.remove()
    with statements(gateway) as seen:
        identity = connector.login(PHONE_SHAPED_USERNAME, LOCAL_PASSWORD)
    assert identity is not None and identity.display_name == "Phone-shaped"
    # By phone (no such phone), then by username: two reads, nothing written.
    assert len(seen) == 2 and all(sql.lstrip().upper().startswith("SELECT") for sql, _ in seen)
    # Just the columns a login needs: not the ORM's whole row (the sealed number, the admin flag ...).
    assert not any("id_number_sealed" in sql or "is_admin" in sql or "created_at" in sql for sql, _ in seen)
    if db.engine.dialect.driver == "psycopg":
        assert not any(through_sqlalchemy for _, through_sqlalchemy in seen)


def test_identity_is_the_one_the_orm_account_gives(gateway: Flask):
    connector = local.LocalAccounts("accounts")
    for login, password in ((DEMO_CITIZEN.id_number, CITIZEN_PASSWORD), (PHONE_SHAPED_USERNAME, LOCAL_PASSWORD)):
        identity = connector.login(login, password)
        orm = find_by_login_name(login)
        assert identity is not None and orm is not None
        assert identity == local.identity_of(orm, "accounts")


def test_garbage_login_names_do_not_touch_the_database(gateway: Flask):
    db.session.remove()
    with statements(gateway) as seen:
        assert login_account("") is None
        assert login_account("   ") is None
        assert login_account("y" * 65) is None
    assert seen == []


def test_unknown_disabled_and_wrong_each_cost_one_verification(gateway: Flask, verifications: list[str]):
    connector = local.LocalAccounts()
    assert connector.login("nobody-here", LOCAL_PASSWORD) is None
    assert verifications == [local._DUMMY_HASH]
    verifications.clear()
    assert connector.login(PHONE_SHAPED_USERNAME, "wrong") is None
    assert len(verifications) == 1 and verifications[0] != local._DUMMY_HASH
    verifications.clear()
    account = find_by_login_name(PHONE_SHAPED_USERNAME)
    assert account is not None
    for status in ("disabled", "locked"):
        account.status = status
        db.session.commit()
        assert connector.login(PHONE_SHAPED_USERNAME, LOCAL_PASSWORD) is None
        assert verifications == [local._DUMMY_HASH]  # as for an unknown name
        verifications.clear()
        account = find_by_login_name(PHONE_SHAPED_USERNAME)
        assert account is not None


def test_a_hash_at_old_parameters_is_upgraded_by_an_update_through_sqlalchemy(gateway: Flask):
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    account = find_by_login_name(PHONE_SHAPED_USERNAME)
    assert account is not None
    account.password_hash = weak.hash(LOCAL_PASSWORD)
    db.session.commit()
    account_id = account.id
    assert local.PASSWORDS.check_needs_rehash(account.password_hash)
    db.session.remove()
    with statements(gateway) as seen:
        identity = local.LocalAccounts().login(PHONE_SHAPED_USERNAME, LOCAL_PASSWORD)
    assert identity is not None and identity.subject == account_id
    updates = [(sql, through) for sql, through in seen if sql.lstrip().upper().startswith("UPDATE")]
    # Through SQLAlchemy's execution (revocation tracking reads it), by the account's id.
    assert len(updates) == 1 and updates[0][1] and "password_hash" in updates[0][0]
    db.session.remove()
    stored = db.session.get(Account, account_id)
    assert stored is not None and not local.PASSWORDS.check_needs_rehash(stored.password_hash)
    local.PASSWORDS.verify(stored.password_hash, LOCAL_PASSWORD)
    # Committed: a login after it finds nothing left to upgrade.
    db.session.remove()
    with statements(gateway) as seen:
        assert local.LocalAccounts().login(PHONE_SHAPED_USERNAME, LOCAL_PASSWORD) is not None
    assert not any(sql.lstrip().upper().startswith("UPDATE") for sql, _ in seen)
