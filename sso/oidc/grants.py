"""Authlib grants, kept thin: authorization code (+PKCE S256, +OpenID), refresh, client credentials."""

from __future__ import annotations

import time
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode
from flask import current_app

from ..crypto import new_token, token_hash
from ..db import db
from ..models import Account, Client, Grant, RefreshToken, utcnow
from . import tokens
from .tokens import Authorization

CODE_KIND = "code"
TOKEN_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


def _gateway():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


class StoredCode(dict):  # type: ignore[type-arg]
    """An authorization code's payload from the short-lived store, with Authlib's accessors."""

    def get_redirect_uri(self) -> str:
        return self["redirect_uri"]  # type: ignore[no-any-return]

    def get_scope(self) -> str:
        return self["scope"]  # type: ignore[no-any-return]

    def get_nonce(self) -> str | None:
        return self.get("nonce")

    def get_auth_time(self) -> int | None:
        return self.get("auth_time")

    def get_acr(self) -> str | None:
        return self.get("acr")

    def get_amr(self) -> list[str] | None:
        return self.get("amr")

    @property
    def code_challenge(self) -> str | None:
        return self.get("code_challenge")

    @property
    def code_challenge_method(self) -> str | None:
        return self.get("code_challenge_method")


class S256CodeChallenge(CodeChallenge):
    """PKCE pinned to S256 (RFC 9700 §2.1.1): ``plain`` and a missing method are refused.

    Required for public clients, accepted (and then enforced) for confidential ones.
    """

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": CodeChallenge.CODE_CHALLENGE_METHODS["S256"]}

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        payload = grant.request.payload
        challenge = payload.data.get("code_challenge")
        method = payload.data.get("code_challenge_method")
        client: Client = grant.request.client
        if client.is_public and not challenge:
            raise InvalidRequestError("PKCE is required: send 'code_challenge' with method S256.")
        if challenge and method != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def save_authorization_code(self, code: str, request: Any) -> None:
        user: Authorization = request.user
        data = request.payload.data
        payload = {
            "client_id": request.client.client_id,
            "redirect_uri": request.payload.redirect_uri,
            "scope": request.scope,
            "account_id": user.account.id,
            "nonce": data.get("nonce"),
            "code_challenge": data.get("code_challenge"),
            "code_challenge_method": data.get("code_challenge_method"),
            "auth_time": user.auth_time,
            "acr": user.acr,
            "amr": user.amr,
            "sid": user.sid,
            "acting": user.acting,
            "claims": data.get("claims"),
        }
        ttl = _gateway().settings.authorization_code_ttl
        _gateway().store.put(CODE_KIND, code, payload, ttl)

    def generate_authorization_code(self) -> str:
        return new_token(32)

    def query_authorization_code(self, code: str, client: Client) -> StoredCode | None:
        if not isinstance(code, str) or len(code) > 256:
            return None
        # Single use is decided here, atomically: of N concurrent redemptions exactly
        # one consumes the code (Redis GETDEL / the embedded store's lock).
        payload = _gateway().store.consume(CODE_KIND, code)
        if payload is None:
            # RFC 6749 §4.1.2 / RFC 9700 §4.14: a replayed code revokes what it issued.
            used = db.session.execute(
                db.select(Grant).filter_by(code_hash=token_hash(code))
            ).scalar_one_or_none()
            if used is not None:
                tokens.revoke_grant(used.id, "code_reuse")
                from .. import audit

                audit.record(
                    "token.code_reuse", outcome="failure", client_id=used.client_id, grant=used.id
                )
            return None
        if payload["client_id"] != client.client_id:
            return None
        stored = StoredCode(payload)
        stored["_code"] = code
        return stored

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        """Nothing to do: ``query_authorization_code`` already consumed it atomically."""

    def authenticate_user(self, authorization_code: StoredCode) -> Authorization | None:
        account = db.session.get(Account, authorization_code["account_id"])
        if account is None:
            return None
        grant = tokens.new_grant(
            self.request.client,
            account,
            authorization_code["scope"],
            code=authorization_code["_code"],
            sid=authorization_code.get("sid"),
            auth_time=authorization_code.get("auth_time"),
            acr=authorization_code.get("acr"),
            amr=authorization_code.get("amr") or [],
            acting=authorization_code.get("acting"),
        )
        # Committed before any token is issued, so a replay arriving from now on finds it.
        db.session.commit()
        return Authorization.of_grant(
            grant, account, nonce=authorization_code.get("nonce"), claims_request=authorization_code.get("claims")
        )

    def save_token(self, token: dict[str, Any]) -> None:
        db.session.commit()


class OpenIDConnectCode(OpenIDCode):
    """ID tokens signed by the key manager, with sid/azp/acr/amr (OIDC Core §2)."""

    def __init__(self) -> None:
        super().__init__(require_nonce=False)

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        # Nonces bind an ID token to the RP's session; replay is the RP's check
        # (OIDC Core §3.1.3.7 step 11), so any value is accepted here.
        return False

    def process_token(self, grant: Any, response: Any) -> Any:
        _, token, _ = response
        scope = token.get("scope") or ""
        if "openid" not in scope.split():
            return token
        authorization: Authorization = grant.request.user
        token["id_token"] = tokens.issue_id_token(
            grant.request.client,
            authorization,
            access_token=token.get("access_token"),
            nonce=authorization.nonce,
            scope=scope,
        )
        return token


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation on every use (RFC 9700 §4.14.2)

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        if not isinstance(refresh_token, str) or len(refresh_token) > 256:
            return None
        row = db.session.get(RefreshToken, token_hash(refresh_token))
        if row is None:
            return None
        grant = row.grant
        if row.client_id != self.request.client.client_id:
            return None
        if row.used_at is not None:
            # A rotated token came back: someone holds a stolen copy. Revoke the family.
            tokens.revoke_grant(grant.id, "refresh_reuse")
            from .. import audit

            audit.record("token.refresh_reuse", outcome="failure", client_id=row.client_id, grant=grant.id)
            return None
        if grant.revoked_at is not None or row.expires_at <= utcnow():
            return None
        return row

    def authenticate_user(self, refresh_token: RefreshToken) -> Authorization | None:
        grant = refresh_token.grant
        if grant.acting and "cn_legal_person" in (grant.scope or "").split():
            # Acting for an enterprise ends at once (authorisation revoked or past its
            # valid_until, licence revoked, new legal representative): checked before the
            # token is spent, so a registry outage does not burn it (retry later).
            from authlib.oauth2 import OAuth2Error

            from .. import legal
            from ..connectors.base import RegistryUnavailable

            try:
                valid = legal.still_valid(grant.acting)
            except RegistryUnavailable:
                unavailable = OAuth2Error("The enterprise registry cannot be reached now. Try again later.")
                unavailable.error, unavailable.status_code = "temporarily_unavailable", 503
                raise unavailable from None
            if not valid:
                tokens.revoke_grant(grant.id, "acting_ended")
                raise InvalidGrantError("The authorisation to act for this enterprise has ended.")
        # The atomic step: only the request whose UPDATE flips used_at may issue. It is
        # NOT committed here: marking the old token used and storing its successor
        # commit together (save_token), so a crash or a database error in between
        # leaves the old token usable instead of turning the client's retry into
        # "reuse" that revokes the whole grant. The UPDATE's row lock (PostgreSQL) or
        # write lock (SQLite) makes a concurrent use wait, then find it used.
        claimed = db.session.execute(
            db.update(RefreshToken)
            .where(RefreshToken.token_hash == refresh_token.token_hash, RefreshToken.used_at.is_(None))
            .values(used_at=utcnow())
        ).rowcount
        if claimed != 1:
            db.session.rollback()
            tokens.revoke_grant(grant.id, "refresh_reuse")
            raise InvalidGrantError("The refresh token was already used.")
        account = db.session.get(Account, grant.account_id) if grant.account_id else None
        if account is None:
            return None
        return Authorization.of_grant(grant, account)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        """Already marked used in ``authenticate_user``; commit the new token."""
        db.session.commit()

    def save_token(self, token: dict[str, Any]) -> None:
        db.session.commit()


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    # No "none": a public client has no credentials to present (RFC 6749 §4.4).
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def save_token(self, token: dict[str, Any]) -> None:
        """Stateless JWT: nothing to persist."""


def auth_time_now() -> int:
    return int(time.time())
