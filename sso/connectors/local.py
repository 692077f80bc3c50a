"""The gateway's own account store: password login by identity number, phone or username.

Passwords are argon2id at OWASP parameters; an unknown login name costs the same
time as a wrong password, and both get the same answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..db import db
from ..models import Account
from .base import Identity, VerifiedAttribute

if TYPE_CHECKING:
    from ..accounts import LoginAccount

# OWASP password storage cheat sheet: argon2id, 19 MiB, t=2, p=1.
PASSWORDS = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the login name is unknown, so both cases cost the same time.
_DUMMY_HASH = PASSWORDS.hash("not-a-real-password")


def _encodable(*values: str) -> bool:
    """Lone surrogates cannot be hashed or looked up: such input is simply not a login."""
    try:
        for value in values:
            value.encode("utf-8")
    except (UnicodeEncodeError, AttributeError):
        return False
    return True


def identity_of(account: Account | LoginAccount, connector_id: str | None = None) -> Identity:
    attributes = {}
    if account.verified_at is not None:
        source = account.verification_source or "population-registry"
        attributes = {
            key: VerifiedAttribute(value, source, account.verified_at)
            for key, value in (account.verified_attributes or {}).items()
            if value is not None
        }
    return Identity(
        # The connector that vouched for this login; the account row keeps where
        # its identity was verified (verification_source) separately.
        connector_id=connector_id or account.connector_id,
        subject=account.id,
        display_name=account.display_name,
        principal="natural",
        assurance=account.assurance,
        attributes=attributes,
    )


class LocalAccounts:
    """Connector type ``accounts``: password login against the gateway's account table."""

    def __init__(self, connector_id: str = "accounts", name: str = "Gateway accounts") -> None:
        self.id = connector_id
        self.name = name

    @classmethod
    def from_config(cls, connector_id: str, name: str, settings: dict[str, Any], instance_path: str) -> LocalAccounts:
        return cls(connector_id, name)

    def login(self, username: str, password: str) -> Identity | None:
        from ..accounts import login_account, set_password_hash

        if not _encodable(username, password):
            return None
        # Just the columns a login needs, without the ORM (sso.accounts.login_account).
        account = login_account(username)
        if account is not None and account.status != "active":
            account = None
        stored = account.password_hash if account else _DUMMY_HASH
        try:
            PASSWORDS.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if account is None:
            return None
        if PASSWORDS.check_needs_rehash(account.password_hash):
            # Parameters changed since this hash was made: upgrade it now (UPDATE, commit).
            set_password_hash(account.id, PASSWORDS.hash(password))
        return identity_of(account, self.id)

    def lookup(self, subject: str) -> Identity | None:
        if not _encodable(subject) or len(subject) > 64:
            return None
        account = db.session.get(Account, subject)
        return identity_of(account, self.id) if account and account.status == "active" else None


def create_account(username: str, password: str, display_name: str) -> Account:
    """A local (self-asserted) account: operators, the demo, tests."""
    account = Account(
        username=username,
        password_hash=PASSWORDS.hash(password),
        display_name=display_name,
        connector_id="accounts",
    )
    db.session.add(account)
    db.session.commit()
    return account
