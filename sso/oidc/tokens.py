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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app

from .. import metrics
from ..claims import legal_person_claim
from ..crypto import new_token, token_hash
from ..db import db
from ..models import Account, Client, Grant, RefreshToken, RevokedAccessToken, utcnow

ACCESS_TOKEN_TYP = "at+jwt"


@dataclass
class Authorization:
    """The end-user side of a grant, handed to Authlib as its ``user``."""

    account: Account
    grant_id: str
    sid: str | None
    auth_time: int | None
    acr: str | None
    amr: list[str] = field(default_factory=list)
    nonce: str | None = None
    acting: dict[str, Any] | None = None  # legal-person context of the session
    claims_request: str | None = None  # the authorization request's claims parameter (§5.5)

    def get_user_id(self) -> str:
        return self.account.id

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
            **request_only,
        )


def _gateway():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


def subject_for(client: Client, account: Account) -> str:
    """The ``sub`` a portal sees for an account: pairwise unless registered public."""
    from ..claims import subject_for as pairwise_or_public

    return pairwise_or_public(client, account)


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
        claims["sub"] = subject_for(client, authorization.account)
        claims["gid"] = authorization.grant_id
        claims.update(authorization.session_claims(scope))
    else:
        # RFC 9068 §2.2: with no resource owner, sub is the client itself.
        claims["sub"] = client.client_id
    return gw.keys.sign(claims, alg="RS256", typ=ACCESS_TOKEN_TYP)  # type: ignore[no-any-return]


def issue_refresh_token(grant: Grant, client: Client, scope: str) -> str:
    token = new_token(32)
    db.session.add(
        RefreshToken(
            token_hash=token_hash(token),
            grant_id=grant.id,
            client_id=client.client_id,
            scope=scope,
            expires_at=grant.expires_at,
        )
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
        "sub": subject_for(client, authorization.account),
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
        if include_refresh_token and user is not None:
            grant = db.session.get(Grant, user.grant_id)
            if grant is not None:
                # RFC 6749 §6: a rotated refresh token keeps the grant's full scope,
                # even when this access token was asked for less.
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


def new_grant(
    client: Client,
    account: Account,
    scope: str,
    *,
    code: str,
    sid: str | None,
    auth_time: int | None,
    acr: str | None,
    amr: list[str],
    acting: dict[str, Any] | None = None,
) -> Grant:
    settings = _gateway().settings
    grant = Grant(
        client_id=client.client_id,
        account_id=account.id,
        scope=scope,
        code_hash=token_hash(code),
        sid=sid,
        auth_time=auth_time,
        acr=acr,
        amr=amr,
        acting=acting,
        expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl),
    )
    db.session.add(grant)
    return grant


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
