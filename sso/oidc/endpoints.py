"""Introspection (RFC 7662), revocation (RFC 7009) and RP-initiated logout endpoints.

Access tokens are JWTs, but "active" is the server's word: signature, issuer and
times, then the revocation list and the state of the grant they came from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import current_app

from .. import revocations
from ..crypto import token_hash
from ..db import db
from ..keys import TokenInvalid
from ..models import Account, Client, Grant, RefreshToken, RevokedAccessToken, utcnow
from ..revocations import AccountFacts, GrantFacts
from . import tokens


def _gateway():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


@dataclass(frozen=True)
class ActiveToken:
    """An active access token: its claims and, for a user's token, what its grant says."""

    claims: dict[str, Any]
    grant: GrantFacts | None


VERIFIED_MAX = 10_000


def _verified_access_token(gw: Any, token: str) -> dict[str, Any] | None:
    """The claims of an access token whose signature is ours, else None.

    Remembered per app by the exact token string, with the ETag of the published key
    set it was verified against: a token presented again (a portal introspecting on
    every request) skips the RSA verification (~35 us) until a key is added, retired
    or withdrawn.  Claims are copied out: callers never share them.
    """
    verified = current_app.extensions.setdefault("sso_verified_access_tokens", {})
    _, etag = gw.keys.jwks_document()
    known = verified.get(token) if isinstance(token, str) else None
    if known is not None and known[0] == etag:
        return dict(known[1])
    try:
        _, claims = gw.keys.verify(token, typ=tokens.ACCESS_TOKEN_TYP)
    except TokenInvalid:
        return None
    if len(verified) >= VERIFIED_MAX:
        verified.clear()
    verified[token] = (etag, dict(claims))
    return claims


def validate_access_token(token: str) -> dict[str, Any] | None:
    """The claims of an active access token we issued, else None."""
    active = check_access_token(token)
    return active.claims if active is not None else None


def check_access_token(token: str) -> ActiveToken | None:
    """Signature, issuer and times, then "not revoked": from this process's cache
    (``sso.revocations``: forgotten at once on every revocation, everywhere) or, on a
    miss, from one SQL statement whose positive answer is then remembered."""
    gw = _gateway()
    claims = _verified_access_token(gw, token)
    if claims is None:
        return None
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if claims.get("iss") != gw.settings.issuer:
        return None
    if not isinstance(exp, int) or exp <= now or not isinstance(nbf, int) or nbf > now + 30:
        return None
    jti = claims.get("jti")
    if not isinstance(jti, str):
        return None
    cache = revocations.cache_of(current_app)
    gid = claims.get("gid")
    if gid is None:
        if not cache.jti(jti):
            ticket = cache.ticket()  # before the query: a revocation from now on voids it
            if db.session.execute(db.select(db.exists().where(RevokedAccessToken.jti == jti))).scalar():
                return None
            cache.store(ticket, jti)
        return ActiveToken(claims, None)
    if not isinstance(gid, str):
        return None
    grant = cache.grant(gid, jti)
    if grant is None:
        ticket = cache.ticket()
        # One round trip: the grant and the revocation list together.
        revoked = db.exists().where(RevokedAccessToken.jti == jti)
        row = db.session.execute(db.select(Grant, revoked).where(Grant.id == gid)).first()
        if row is None or row[1] or row[0].revoked_at is not None:
            return None
        found = row[0]
        grant = GrantFacts(found.id, found.account_id, found.acting, found.sid, found.client_id)
        cache.store(ticket, jti, grant)
    if "cn_legal_person" in claims:
        # A token naming an enterprise is active only while its holder may still act
        # for it: checked on EVERY request, cached or not — two primary-key reads and
        # ONE registry lookup (legal.still_valid); a registry outage counts as
        # inactive (fail closed).
        from .. import legal
        from ..connectors.base import RegistryUnavailable

        try:
            if not legal.still_valid(grant.acting):
                return None
        except RegistryUnavailable:
            return None
    return ActiveToken(claims, grant)


def account_of(account_id: str) -> AccountFacts | None:
    """The account as userinfo reads it: remembered like grants, forgotten on every
    committed change of its row (status included) everywhere at once (sso.revocations)."""
    cache = revocations.cache_of(current_app)
    facts = cache.account(account_id)
    if facts is None:
        ticket = cache.ticket()
        account = db.session.get(Account, account_id)
        if account is None:
            return None
        facts = AccountFacts.of(account)
        cache.store_account(ticket, facts)
    return facts


@dataclass
class InspectedToken:
    """An access or refresh token as the introspection and revocation endpoints see it."""

    kind: str  # access_token | refresh_token
    client_id: str
    active: bool
    claims: dict[str, Any] = field(default_factory=dict)
    refresh: RefreshToken | None = None

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def is_expired(self) -> bool:
        return not self.active

    def is_revoked(self) -> bool:
        return not self.active

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))


def find_token(token: str, hint: str | None) -> InspectedToken | None:
    if not isinstance(token, str) or not token or len(token) > 16384:
        return None
    order = ["refresh_token", "access_token"] if hint == "refresh_token" else ["access_token", "refresh_token"]
    for kind in order:
        if kind == "access_token" and token.count(".") == 2:
            claims = validate_access_token(token)
            if claims is not None:
                return InspectedToken("access_token", str(claims["client_id"]), True, claims)
            try:
                _, raw = _gateway().keys.verify(token, typ=tokens.ACCESS_TOKEN_TYP)
            except TokenInvalid:
                continue
            # Ours but no longer active: revocation still needs to know its client.
            return InspectedToken("access_token", str(raw.get("client_id")), False, raw)
        if kind == "refresh_token":
            row = db.session.get(RefreshToken, token_hash(token))
            if row is not None:
                grant = row.grant
                active = row.used_at is None and grant.revoked_at is None and row.expires_at > utcnow()
                claims = {
                    "scope": row.scope,
                    "client_id": row.client_id,
                    "exp": int(row.expires_at.timestamp()) if active else 0,
                    "gid": grant.id,
                }
                if grant.account_id:
                    claims["account_id"] = grant.account_id
                return InspectedToken("refresh_token", row.client_id, active, claims, row)
    return None


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> InspectedToken | None:
        return find_token(token_string, token_type_hint)

    def check_permission(self, token: InspectedToken, client: Client, request: Any) -> bool:
        # A portal may introspect only what was issued to it: no cross-portal probing.
        return token.check_client(client)

    def introspect_token(self, token: InspectedToken) -> dict[str, Any]:
        c = token.claims
        if token.kind == "refresh_token":
            return {
                "active": True,
                "scope": c["scope"],
                "client_id": c["client_id"],
                "exp": c["exp"],
                "iss": _gateway().settings.issuer,
            }
        keep = ("scope", "client_id", "sub", "exp", "iat", "nbf", "aud", "iss", "jti", "auth_time", "acr", "amr", "sid")
        body = {k: c[k] for k in keep if k in c}
        body["active"] = True
        body["token_type"] = "Bearer"
        return body


class Revocation(RevocationEndpoint):
    # Public clients may revoke their own tokens (RFC 7009 §2.1 with client_id).
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> InspectedToken | None:
        return find_token(token_string, token_type_hint)

    def revoke_token(self, token: InspectedToken, request: Any) -> None:
        from .. import audit

        if token.kind == "refresh_token" and token.refresh is not None:
            # RFC 7009 §2.1: revoking a refresh token also ends the access tokens of its grant.
            tokens.revoke_grant(token.refresh.grant_id, "revoked")
            audit.record("token.revoked", client_id=token.client_id, kind="refresh_token", grant=token.refresh.grant_id)
        elif token.kind == "access_token" and isinstance(token.claims.get("jti"), str):
            tokens.revoke_access_token(token.claims["jti"], int(token.claims.get("exp", time.time())))
            audit.record("token.revoked", client_id=token.client_id, kind="access_token")


class EndSession(EndSessionEndpoint):
    """RP-Initiated Logout 1.0: the hint must be an ID token we signed (any age)."""

    def get_server_jwks(self) -> dict[str, Any]:
        import json

        return json.loads(_gateway().keys.jwks_document()[0])  # type: ignore[no-any-return]

    def _validate_id_token_hint(self, id_token_hint: str) -> dict[str, Any]:
        gw = _gateway()
        try:
            header, claims = gw.keys.verify(id_token_hint)
        except TokenInvalid as exc:
            raise InvalidRequestError("The 'id_token_hint' is not a valid ID token.") from exc
        # An access token is signed by the same keys but is not an ID token.
        typ = str(header.get("typ", "JWT")).lower()
        if typ not in ("jwt", "") or claims.get("iss") != gw.settings.issuer or "aud" not in claims:
            raise InvalidRequestError("The 'id_token_hint' is not a valid ID token.")
        return claims

    def end_session(self, end_session_request: Any) -> None:
        """The view ends the browser session itself; nothing here."""
