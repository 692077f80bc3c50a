"""Citizen accounts: real-name verification against the population registry, registration.

A citizen account exists only after the registry confirmed that the name and the
resident identity number belong together and the person's status is normal.  The
number is stored sealed, looked up by keyed hash, and shown masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import date
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, select, update

from .connectors.base import PersonLookup, PersonRecord
from .connectors.local import PASSWORDS
from .db import DriverSQL, db, driver_connection, driver_execute, unit
from .db import commit as commit_unit
from .identifiers import InvalidIdentifier, mask_resident_id, validate_resident_id
from .models import Account, utcnow

PHONE = re.compile(r"^1[3-9]\d{9}$")
SOURCE = "population-registry"

# Error codes shown to the person registering, with the message the page shows.
# "not_matched" deliberately covers unknown person AND name mismatch: a stranger
# must not learn that a number exists with another name.
VERIFICATION_ERRORS = {
    "format": "The identity number must have 18 characters: 17 digits and a final digit or X.",
    "region": "The first six digits are not a valid region code.",
    "birth_date": "Digits 7 to 14 are not a valid date of birth.",
    "check_char": "The last character does not match: please check the number for typing errors.",
    "not_matched": "The name and identity number do not match the population registry.",
    "deceased": "This identity cannot be registered: the registry records the person as deceased.",
    "cancelled": "This identity cannot be registered: its household registration is cancelled.",
    "already_registered": "An account already exists for this identity. Sign in or reset the password.",
    "registry_unavailable": "The population registry cannot be reached now. Please try again later.",
}


class VerificationFailed(Exception):
    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(VERIFICATION_ERRORS[code])


@dataclass(frozen=True)
class VerifiedPerson:
    record: PersonRecord
    verified_at: Any

    @property
    def attributes(self) -> dict[str, Any]:
        """What the registry confirmed, for claims (no identity number here)."""
        r = self.record
        return {
            "name": r.name,
            "gender": r.sex,
            "birthdate": r.birth_date.isoformat(),
            "region_code": r.region_code,
            "address": r.address,
        }


def _gateway():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


def person_registry() -> PersonLookup:
    registry = _gateway().connectors.person_registry
    if registry is None:
        raise VerificationFailed("registry_unavailable")
    return registry  # type: ignore[no-any-return]


def verify_real_name(name: str, id_number: str, *, today: date | None = None) -> VerifiedPerson:
    """Check a name + number pair against the registry; raise VerificationFailed(code)."""
    from .connectors.base import RegistryUnavailable

    try:
        parsed = validate_resident_id(id_number, today=today)
    except InvalidIdentifier as exc:
        raise VerificationFailed(exc.code) from None
    try:
        record = person_registry().find_person(parsed.number)
    except RegistryUnavailable:
        raise VerificationFailed("registry_unavailable") from None
    if record is None or record.name != name.strip():
        raise VerificationFailed("not_matched")
    if record.status == "deceased":
        raise VerificationFailed("deceased")
    if not record.is_normal:
        raise VerificationFailed("cancelled")
    return VerifiedPerson(record, utcnow())


# Built once: making a statement (and its cache key) cost more Python than running it.
_BY_ID_NUMBER_HMAC = select(Account).where(Account.id_number_hmac == bindparam("value"))
_BY_PHONE = select(Account).where(Account.phone == bindparam("value"))
_BY_USERNAME = select(Account).where(Account.username == bindparam("value"))


def find_by_id_number(id_number: str) -> Account | None:
    digest = _gateway().vault.lookup_hash(id_number)
    return db.session.execute(_BY_ID_NUMBER_HMAC, {"value": digest}).scalar_one_or_none()


def find_by_login_name(login: str) -> Account | None:
    """An account by resident identity number, bound phone number or username."""
    return _by_login_name(login, _find_orm)  # type: ignore[no-any-return]


_ORM_BY = {"id_number_hmac": _BY_ID_NUMBER_HMAC, "phone": _BY_PHONE, "username": _BY_USERNAME}


def _find_orm(column: str, value: str) -> Account | None:
    return db.session.execute(_ORM_BY[column], {"value": value}).scalar_one_or_none()  # type: ignore[no-any-return]


def _by_login_name(login: str, find: Any) -> Any:
    """The lookup order of a login name, whatever ``find(column, value)`` reads.

    An 18-character name that is a valid identity number is looked up by number
    only; a name shaped like a mobile number by phone, then by username; any other
    by username.
    """
    login = (login or "").strip()
    if not login or len(login) > 64:
        return None
    if len(login) == 18:
        try:
            number = validate_resident_id(login).number
        except InvalidIdentifier:
            pass
        else:
            return find("id_number_hmac", _gateway().vault.lookup_hash(number))
    if PHONE.match(login):
        found = find("phone", login)
        if found is not None:
            return found
    return find("username", login)


# ---- the password login's read: the columns it needs, without the ORM -----------------


@dataclass(frozen=True, slots=True)
class LoginAccount:
    """What a password login reads of an account: its hash, its status, its Identity's columns."""

    id: str
    status: str
    password_hash: str
    display_name: str
    connector_id: str
    assurance: str
    verified_at: Any
    verification_source: str | None
    verified_attributes: dict[str, Any] | None


_LOGIN_COLUMNS = tuple(field.name for field in fields(LoginAccount))
_ACCOUNTS = Account.__table__
# Core statements (SQLite and any driver but psycopg), built once.
_CORE_BY = {
    column: select(*(_ACCOUNTS.c[name] for name in _LOGIN_COLUMNS)).where(_ACCOUNTS.c[column] == bindparam("value"))
    for column in ("id_number_hmac", "phone", "username")
}
# The same reads for PostgreSQL, straight on psycopg in the session's transaction
# (sso.db.driver_execute): psycopg loads the json column with json.loads and the
# timestamp as a naive datetime, as SQLAlchemy's types do.
_DRIVER_SELECT = """
SELECT accounts.id, accounts.status, accounts.password_hash, accounts.display_name, accounts.connector_id,
       accounts.assurance, accounts.verified_at, accounts.verification_source, accounts.verified_attributes
FROM accounts
"""
_DRIVER_BY = {
    "id_number_hmac": DriverSQL(_DRIVER_SELECT + "WHERE accounts.id_number_hmac = %(value)s"),
    "phone": DriverSQL(_DRIVER_SELECT + "WHERE accounts.phone = %(value)s"),
    "username": DriverSQL(_DRIVER_SELECT + "WHERE accounts.username = %(value)s"),
}
_SET_PASSWORD_HASH = (
    update(_ACCOUNTS).where(_ACCOUNTS.c.id == bindparam("b_id")).values(password_hash=bindparam("b_password_hash"))
)


def login_account(login: str) -> LoginAccount | None:
    """:func:`find_by_login_name` for a password login: the same lookup, just the columns it needs.

    No ORM object: a Core read, or on PostgreSQL the same read on psycopg.
    """

    def find(column: str, value: str) -> LoginAccount | None:
        # The connection is asked for only once there is something to look up.
        connection = driver_connection(db.session)
        if connection is None:
            row = db.session.execute(_CORE_BY[column], {"value": value}).first()
        else:
            row = driver_execute(connection, _DRIVER_BY[column], {"value": value}).fetchone()
        return None if row is None else LoginAccount(*row)

    return _by_login_name(login, find)  # type: ignore[no-any-return]


def set_password_hash(account_id: str, password_hash: str) -> None:
    """Store a new hash of the account's password (a rehash at new parameters) and commit.

    A Core UPDATE through SQLAlchemy, so revocation tracking sees the write as it
    saw the ORM's flush (``UPDATE accounts ... WHERE accounts.id = ...``): on the
    request's own connection while one is open (a sign-in's, sso.web.views), else
    through the session.
    """
    unit().execute(_SET_PASSWORD_HASH, {"b_id": account_id, "b_password_hash": password_hash})
    commit_unit()


def register_citizen(person: VerifiedPerson, password: str, phone: str | None) -> Account:
    """Create the account of a verified person (the caller verified the phone by SMS)."""
    record = person.record
    if find_by_id_number(record.id_number) is not None:
        raise VerificationFailed("already_registered")
    account = Account(
        password_hash=PASSWORDS.hash(password),
        display_name=record.name,
        connector_id=SOURCE,
        assurance="registry-verified",
        verified_at=person.verified_at,
        verification_source=SOURCE,
        verified_attributes=person.attributes,
        id_number_masked=mask_resident_id(record.id_number),
        phone=phone,
        phone_verified_at=utcnow() if phone else None,
    )
    db.session.add(account)
    db.session.flush()  # the id seals the number to this row
    vault = _gateway().vault
    account.id_number_hmac = vault.lookup_hash(record.id_number)
    account.id_number_sealed = vault.seal(record.id_number, account.id)
    db.session.commit()
    return account


def id_number_of(account: Account) -> str | None:
    """The full number, for the few places that need it (legal-rep match, approved claims)."""
    if account.id_number_sealed is None:
        return None
    return _gateway().vault.open(account.id_number_sealed, account.id)  # type: ignore[no-any-return]


def disable(account: Account, *, via: str) -> int:
    """Stop an account at once: no new sign-in, every session ended, every token revoked.

    Sessions end through single logout (portals with a back-channel URI are told);
    grants without a session (none today, but a refresh token must never outlive a
    disabled account) are revoked too.  Returns the number of sessions ended.
    """
    from . import audit, logout
    from .models import Grant
    from .session import sessions_of

    account.status = "disabled"
    audit.record("account.disabled", commit=False, account=account.id, via=via)
    db.session.commit()
    ended = sum(logout.end_session(record.sid, "account_disabled") for record in sessions_of(account.id))
    db.session.execute(
        db.update(Grant)
        .where(Grant.account_id == account.id, Grant.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason="account_disabled")
    )
    db.session.commit()
    return ended


def enable(account: Account, *, via: str) -> None:
    """Let a disabled account sign in again (its old sessions and tokens stay ended)."""
    from . import audit

    account.status = "active"
    audit.record("account.enabled", commit=False, account=account.id, via=via)
    db.session.commit()
