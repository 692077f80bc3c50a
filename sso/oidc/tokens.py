"""Tokens: the only caller of ``KeyManager.sign()``.

* access tokens: JWT per RFC 9068 (``typ: at+jwt``), short-lived, revocable by
  ``jti`` or by their grant (``gid``);
* refresh tokens: opaque, 256-bit, stored by hash, rotated on every use;
* ID tokens: OIDC Core §2, RS256 by default or ES256 per client.
"""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import datetime, timedelta
from typing import Any

from flask import current_app

from .. import metrics
from ..claims import legal_person_claim
from ..crypto import new_token, token_hash
from ..db import db
from ..models import Account, Client, Grant, RefreshToken, RevokedAccessToken, SessionRecord, new_id, utcnow

ACCESS_TOKEN_TYP = "at+jwt"


class Authorization:
    """The end-user side of a grant, handed to Authlib as its ``user``.

    Built either around a loaded :class:`Account` (authorize) or around the
    account's id alone (code exchange, refresh): then ``account`` is loaded on first
    use, and the token path — whose ``sub`` needs only the id — never loads it.
    ``grant_scope``/``grant_expires_at`` (when known) let the rotated refresh token
    be stored without reading the grant again.
    """

    __slots__ = (
        "_account",
        "account_id",
        "grant_id",
        "sid",
        "auth_time",
        "acr",
        "amr",
        "nonce",
        "acting",
        "claims_request",
        "grant_scope",
        "grant_expires_at",
        "issued_refresh_token",
    )

    def __init__(
        self,
        account: Account | None = None,
        grant_id: str = "",
        sid: str | None = None,
        auth_time: int | None = None,
        acr: str | None = None,
        amr: list[str] | None = None,
        nonce: str | None = None,
        acting: dict[str, Any] | None = None,  # legal-person context of the session
        claims_request: str | None = None,  # the authorization request's claims parameter (§5.5)
        *,
        account_id: str | None = None,
        grant_scope: str | None = None,
        grant_expires_at: datetime | None = None,
        issued_refresh_token: str | None = None,
    ) -> None:
        if account is None and account_id is None:
            raise ValueError("an Authorization needs its account or the account's id")
        self._account = account
        self.account_id: str = account.id if account is not None else account_id  # type: ignore[assignment]
        self.grant_id = grant_id
        self.sid = sid
        self.auth_time = auth_time
        self.acr = acr
        self.amr: list[str] = amr if amr is not None else []
        self.nonce = nonce
        self.acting = acting
        self.claims_request = claims_request
        self.grant_scope = grant_scope
        self.grant_expires_at = grant_expires_at
        # A refresh token already stored with the grant (code exchange): handed out as is.
        self.issued_refresh_token = issued_refresh_token

    @property
    def account(self) -> Account:
        if self._account is None:
            account = db.session.get(Account, self.account_id)
            if account is None:
                raise LookupError("the account of this authorization no longer exists")
            self._account = account
        return self._account

    def get_user_id(self) -> str:
        return self.account_id

    def session_claims(self, scope: str) -> dict[str, Any]:
        """What both ID and access tokens say about the sign-in (and the acting enterprise)."""
        claims: dict[str, Any] = {}
        if self.auth_time:
            claims["auth_time"] = self.auth_time
        if self.acr:
            claims["acr"] = self.acr
        if self.amr:
            claims["amr"] = self.amr
        if self.sid:
            claims["sid"] = self.sid
        if self.acting and "cn_legal_person" in scope.split():
            claims["cn_legal_person"] = legal_person_claim(self.acting)
        return claims

    @classmethod
    def of_grant(cls, grant: Grant, account: Account, **request_only: Any) -> Authorization:
        """The end-user side as recorded on the grant (+ nonce/claims of the code exchange)."""
        return cls(
            account=account,
            grant_id=grant.id,
            sid=grant.sid,
            auth_time=grant.auth_time,
            acr=grant.acr,
            amr=list(grant.amr or []),
            acting=grant.acting,
            grant_scope=grant.scope,
            grant_expires_at=grant.expires_at,
            **request_only,
        )


def _gateway():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


def subject_for(client: Client, account: Account) -> str:
    """The ``sub`` a portal sees for an account: pairwise unless registered public."""
    from ..claims import subject_for as pairwise_or_public

    return pairwise_or_public(client, account)


class _AccountRef:
    """An account known by its id alone: all that ``claims.subject_for`` reads of it."""

    __slots__ = ("id",)

    def __init__(self, account_id: str) -> None:
        self.id = account_id


def _subject(client: Client, authorization: Authorization) -> str:
    account = authorization._account
    return subject_for(client, account if account is not None else _AccountRef(authorization.account_id))  # type: ignore[arg-type]


def half_hash(value: str, alg: str) -> str:
    """OIDC Core §3.1.3.6 at_hash: left half of the hash of the ASCII value, base64url."""
    digest = hashlib.sha256(value.encode("ascii")).digest()  # RS256 and ES256 both use SHA-256
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def issue_access_token(
    client: Client, scope: str, authorization: Authorization | None, expires_in: int
) -> str:
    gw = _gateway()
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": gw.settings.issuer,
        "exp": now + expires_in,
        "iat": now,
        "nbf": now,
        "jti": new_token(16),
        "client_id": client.client_id,
        # RFC 9068 §3: without a resource indicator the audience is the client's own
        # API surface; the gateway itself accepts it at userinfo.
        "aud": client.client_id,
        "scope": scope,
    }
    if authorization is not None:
        claims["sub"] = _subject(client, authorization)
        claims["gid"] = authorization.grant_id
        claims.update(authorization.session_claims(scope))
    else:
        # RFC 9068 §2.2: with no resource owner, sub is the client itself.
        claims["sub"] = client.client_id
    return gw.keys.sign(claims, alg="RS256", typ=ACCESS_TOKEN_TYP)  # type: ignore[no-any-return]


_INSERT_REFRESH_TOKEN = RefreshToken.__table__.insert()


def issue_refresh_token(grant: Grant, client: Client, scope: str) -> str:
    """A new refresh token of ``grant`` (flushed already), valid as long as the grant."""
    return store_refresh_token(grant.id, client, scope, grant.expires_at)


def store_refresh_token(grant_id: str, client: Client, scope: str, expires_at: datetime) -> str:
    """A new refresh token of the grant, stored by hash in the request's transaction.

    One Core ``INSERT`` on the session's connection: no ORM object, no unit-of-work
    flush at commit.  It commits (or rolls back) with whatever else the request did.
    """
    token = new_token(32)
    db.session.connection().execute(
        _INSERT_REFRESH_TOKEN,
        {
            "token_hash": token_hash(token),
            "grant_id": grant_id,
            "client_id": client.client_id,
            "scope": scope,
            "created_at": utcnow(),
            "expires_at": expires_at,
            "used_at": None,
        },
    )
    return token


def issue_id_token(
    client: Client,
    authorization: Authorization,
    *,
    access_token: str | None,
    nonce: str | None,
    scope: str = "",
) -> str:
    gw = _gateway()
    now = int(time.time())
    alg = client.id_token_signed_response_alg or gw.settings.default_signing_alg
    claims: dict[str, Any] = {
        "iss": gw.settings.issuer,
        "sub": _subject(client, authorization),
        "aud": client.client_id,
        "azp": client.client_id,
        "exp": now + gw.settings.id_token_ttl,
        "iat": now,
    }
    claims.update(authorization.session_claims(scope))
    if nonce:
        claims["nonce"] = nonce
    if access_token:
        claims["at_hash"] = half_hash(access_token, alg)
    if authorization.claims_request:
        # §5.5: claims asked for in the ID token itself, within the consented scopes.
        from ..claims import user_claims
        from ..claims_request import for_id_token, parse

        released = user_claims(authorization.account, client, scope.split(), authorization.acting)
        claims.update(for_id_token(parse(authorization.claims_request), released))
    return gw.keys.sign(claims, alg=alg)  # type: ignore[no-any-return]


def make_token_generator():  # type: ignore[no-untyped-def]
    """Authlib's "default" token generator: JWT access token + opaque refresh token."""

    def generate(
        grant_type: str,
        client: Client,
        user: Authorization | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        settings = _gateway().settings
        ttl = expires_in or settings.access_token_ttl
        scope = scope or ""
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": issue_access_token(client, scope, user, ttl),
            "expires_in": ttl,
            "scope": scope,
        }
        if include_refresh_token and user is not None and user.issued_refresh_token is not None:
            token["refresh_token"] = user.issued_refresh_token
        elif include_refresh_token and user is not None:
            # RFC 6749 §6: a rotated refresh token keeps the grant's full scope, even
            # when this access token was asked for less.
            if user.grant_scope is not None and user.grant_expires_at is not None:
                token["refresh_token"] = store_refresh_token(
                    user.grant_id, client, user.grant_scope, user.grant_expires_at
                )
            else:
                grant = db.session.get(Grant, user.grant_id)
                if grant is not None:
                    token["refresh_token"] = issue_refresh_token(grant, client, grant.scope)
        metrics.token_issued(grant_type, client.client_id)
        return token

    return generate


# ---- revocation -----------------------------------------------------------------


def revoke_grant(grant_id: str, reason: str) -> None:
    """Revoke a whole family: its refresh tokens and every access token naming it."""
    grant = db.session.get(Grant, grant_id)
    if grant is not None and grant.revoked_at is None:
        grant.revoked_at = utcnow()
        grant.revoked_reason = reason
    db.session.commit()


def revoke_access_token(jti: str, exp: int) -> None:
    if db.session.get(RevokedAccessToken, jti) is None:
        db.session.add(RevokedAccessToken(jti=jti, expires_at=datetime.utcfromtimestamp(exp)))
        db.session.commit()


_GRANTS = Grant.__table__
_ACCOUNTS = Account.__table__
# The grant, inserted only if its account still exists and is active and the code's
# session has not ended: INSERT ... SELECT ... FROM accounts WHERE id = :account_id AND
# status = 'active' AND (its session record's ended_at) IS NULL (no row: the account is
# gone or disabled, or a logout came between the code and its exchange, whose grants
# it could not revoke; one statement, not a SELECT then an INSERT).  No session record
# (a code without one) reads as NULL too.
#
# On PostgreSQL the session record is read FOR SHARE, so an exchange and a logout of
# the same session are ordered: a logout's UPDATE of the record (its first statement,
# sso.logout.end_session) makes the exchange wait for the logout's commit and then read
# the ended session (no grant); an exchange that locked first makes the logout's UPDATE
# wait for the exchange's commit, and the logout's next statement, which revokes the
# session's grants, sees the new grant.  Without the lock, an exchange reading the
# record between those two statements of a logout made a grant the logout missed.
_SESSION_RECORDS = SessionRecord.__table__
_SESSION_ENDED_AT = (
    db.select(_SESSION_RECORDS.c.ended_at)
    .where(_SESSION_RECORDS.c.sid == db.bindparam("g_sid", type_=db.String))
    .with_for_update(read=True)  # FOR SHARE on PostgreSQL; SQLite's one writer orders them anyway
    .scalar_subquery()
)
_OPEN_GRANT_SELECT = db.select(
    db.bindparam("g_id", type_=db.String),
    db.bindparam("g_client_id", type_=db.String),
    _ACCOUNTS.c.id,
    db.bindparam("g_scope", type_=db.String),
    db.bindparam("g_code_hash", type_=db.String),
    db.bindparam("g_sid", type_=db.String),
    db.bindparam("g_auth_time", type_=db.Integer),
    db.bindparam("g_acr", type_=db.String),
    db.bindparam("g_amr", type_=_GRANTS.c.amr.type),
    db.bindparam("g_acting", type_=_GRANTS.c.acting.type),
    db.bindparam("g_created_at", type_=db.DateTime),
    db.bindparam("g_expires_at", type_=db.DateTime),
).where(_ACCOUNTS.c.id == db.bindparam("g_account_id"), _ACCOUNTS.c.status == "active", _SESSION_ENDED_AT.is_(None))
_GRANT_COLUMNS = [
    "id", "client_id", "account_id", "scope", "code_hash", "sid", "auth_time", "acr", "amr", "acting",
    "created_at", "expires_at",
]  # fmt: skip
_OPEN_GRANT = _GRANTS.insert().from_select(_GRANT_COLUMNS, _OPEN_GRANT_SELECT).execution_options(preserve_rowcount=True)
# PostgreSQL: the grant and its first refresh token in one statement (a data-modifying
# CTE): the refresh token row exists iff the grant row was inserted.
_OPENED = _GRANTS.insert().from_select(_GRANT_COLUMNS, _OPEN_GRANT_SELECT).returning(_GRANTS.c.id).cte("opened")


def insert_refresh_token_from(grant_id: Any, prefix: str) -> Any:
    """An INSERT of one refresh token whose grant id is ``grant_id`` (a CTE's column, so
    the row exists only if that CTE produced one); the other values are bind parameters
    ``<prefix>hash``, ``<prefix>client_id``, ``<prefix>scope``, ``<prefix>created_at``,
    ``<prefix>expires_at``.  Its rowcount says whether the row went in."""
    return (
        RefreshToken.__table__.insert()
        .from_select(
            ["token_hash", "grant_id", "client_id", "scope", "created_at", "expires_at"],
            db.select(
                db.bindparam(prefix + "hash", type_=db.String),
                grant_id,
                db.bindparam(prefix + "client_id", type_=db.String),
                db.bindparam(prefix + "scope", type_=db.String),
                db.bindparam(prefix + "created_at", type_=db.DateTime),
                db.bindparam(prefix + "expires_at", type_=db.DateTime),
            ),
        )
        # An INSERT's rowcount is kept only when asked for (SQLAlchemy 2.0.28+).
        .execution_options(preserve_rowcount=True)
    )


_OPEN_GRANT_WITH_REFRESH_TOKEN = insert_refresh_token_from(_OPENED.c.id, "r_")


def open_grant(
    client: Client,
    account_id: str,
    scope: str,
    *,
    code: str,
    sid: str | None,
    auth_time: int | None,
    acr: str | None,
    amr: list[str],
    acting: dict[str, Any] | None,
    with_refresh_token: bool,
    **request_only: Any,
) -> Authorization | None:
    """The grant a redeemed code opens, and its first refresh token, in the request's transaction.

    Core ``INSERT``s on the session's connection (no ORM objects that a commit would
    expire and a later read reload), the grant only if the account still exists
    (else None, nothing written); the caller commits before any token is signed.
    Returns the end-user side, built from these values.
    """
    grant_id = new_id()
    now = utcnow()
    expires_at = now + timedelta(seconds=_gateway().settings.refresh_token_ttl)
    params = {
        "g_id": grant_id,
        "g_client_id": client.client_id,
        "g_account_id": account_id,
        "g_scope": scope,
        "g_code_hash": token_hash(code),
        "g_sid": sid,
        "g_auth_time": auth_time,
        "g_acr": acr,
        "g_amr": amr,
        "g_acting": acting,
        "g_created_at": now,
        "g_expires_at": expires_at,
    }
    conn = db.session.connection()
    refresh_token: str | None = None
    if with_refresh_token and conn.dialect.name == "postgresql":
        refresh_token = new_token(32)
        params.update(
            r_hash=token_hash(refresh_token),
            r_client_id=client.client_id,
            r_scope=scope,
            r_created_at=now,
            r_expires_at=expires_at,
        )
        if conn.execute(_OPEN_GRANT_WITH_REFRESH_TOKEN, params).rowcount != 1:
            return None
    else:
        if conn.execute(_OPEN_GRANT, params).rowcount != 1:
            return None
        if with_refresh_token:
            refresh_token = store_refresh_token(grant_id, client, scope, expires_at)
    return Authorization(
        account_id=account_id,
        grant_id=grant_id,
        sid=sid,
        auth_time=auth_time,
        acr=acr,
        amr=list(amr),
        acting=acting,
        grant_scope=scope,
        grant_expires_at=expires_at,
        issued_refresh_token=refresh_token,
        **request_only,
    )


BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def issue_logout_token(client: Client, account: Account, sid: str) -> str:
    """OIDC Back-Channel Logout 1.0 §2.4: sub + sid + events, jti, never a nonce."""
    gw = _gateway()
    now = int(time.time())
    claims = {
        "iss": gw.settings.issuer,
        "aud": client.client_id,
        "iat": now,
        "exp": now + 120,
        "jti": new_token(16),
        "sub": subject_for(client, account),
        "sid": sid,
        "events": {BACKCHANNEL_EVENT: {}},
    }
    alg = client.id_token_signed_response_alg or gw.settings.default_signing_alg
    # §2.4: explicit typing, so a logout token can never pass for an ID token.
    return gw.keys.sign(claims, alg=alg, typ="logout+jwt")  # type: ignore[no-any-return]
