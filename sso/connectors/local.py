"""Local accounts: username + argon2id password in the gateway's own database."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..db import db
from ..models import Account
from .base import Identity

# OWASP password storage cheat sheet: argon2id, 19 MiB, t=2, p=1.
PASSWORDS = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the username is unknown, so both cases cost the same time.
_DUMMY_HASH = PASSWORDS.hash("not-a-real-password")


class LocalAccounts:
    def __init__(self, connector_id: str = "local", name: str = "Local accounts") -> None:
        self.id = connector_id
        self.name = name

    @staticmethod
    def _identity(account: Account) -> Identity:
        return Identity(connector_id=account.connector_id, subject=account.id, display_name=account.display_name)

    def login(self, username: str, password: str) -> Identity | None:
        account = db.session.execute(
            db.select(Account).filter_by(username=username)
        ).scalar_one_or_none()
        stored = account.password_hash if account else _DUMMY_HASH
        try:
            PASSWORDS.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if account is None:
            return None
        if PASSWORDS.check_needs_rehash(account.password_hash):
            account.password_hash = PASSWORDS.hash(password)
            db.session.commit()
        return self._identity(account)

    def lookup(self, subject: str) -> Identity | None:
        account = db.session.get(Account, subject)
        return self._identity(account) if account else None


def create_account(username: str, password: str, display_name: str) -> Account:
    account = Account(
        username=username, password_hash=PASSWORDS.hash(password), display_name=display_name
    )
    db.session.add(account)
    db.session.commit()
    return account
