"""The gateway's own account store: password login by identity number, phone or username.

Passwords are argon2id at OWASP parameters; an unknown login name costs the same
time as a wrong password, and both get the same answer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from nacl.bindings import crypto_pwhash_str_verify
from nacl.exceptions import InvalidkeyError

from ..db import db
from ..models import Account
from .base import Identity, VerifiedAttribute

if TYPE_CHECKING:
    from ..accounts import LoginAccount

# The hashes libsodium verifies: argon2id, version 19, one lane, in the canonical PHC
# form argon2-cffi writes (decimal parameters without leading zeros, unpadded base64
# salt of at least 8 bytes and hash of at least 16), short enough for libsodium's
# 128-byte string buffer.  Every other string goes to argon2-cffi as before.
_SODIUM_HASH = re.compile(
    r"\$argon2id\$v=19\$m=[1-9][0-9]{0,8},t=[1-9][0-9]{0,8},p=1\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{22,}"
)
_SODIUM_MAX = 127  # crypto_pwhash_STRBYTES - 1


class _PasswordHasher(PasswordHasher):
    """argon2-cffi's PasswordHasher, whose verify runs in libsodium when the hash allows.

    Both compute the same argon2id (RFC 9106) over the same PHC string and answer
    the same; libsodium fills the 19 MiB with its AVX2/AVX-512 code chosen at run
    time, ~10-20 % less CPU per verify than argon2-cffi's build, and like it
    releases the GIL while it works.  Hashing, parameters and needs-rehash stay
    argon2-cffi's.  Hashes of other versions, lanes or forms (libsodium rejects
    version 16 as a mismatch; a string over 127 bytes it cannot take) are verified
    by argon2-cffi.
    """

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:  # noqa: A002 - argon2-cffi's name
        if isinstance(hash, str) and len(hash) <= _SODIUM_MAX and _SODIUM_HASH.fullmatch(hash):
            secret = password.encode(self.encoding) if isinstance(password, str) else password
            try:
                crypto_pwhash_str_verify(hash.encode("ascii"), secret)
            except InvalidkeyError:
                raise VerifyMismatchError from None
            return True
        return super().verify(hash, password)


# OWASP password storage cheat sheet: argon2id, 19 MiB, t=2, p=1.
PASSWORDS = _PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
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
