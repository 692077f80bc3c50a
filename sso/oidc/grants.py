"""Authlib grants, kept thin: authorization code (+PKCE S256, +OpenID), refresh, client credentials."""

from __future__ import annotations

import time
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import CODE_CHALLENGE_PATTERN
from authlib.oidc.core import OpenIDCode
from flask import current_app
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from .. import logs
from ..crypto import new_token, token_hash
from ..db import DriverSQL, db, execute_at_once
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
        data = grant.request.payload.data
        challenge = data.get("code_challenge")
        method = data.get("code_challenge_method")
        client: Client = grant.request.client
        if client.is_public and not challenge:
            raise InvalidRequestError("PKCE is required: send 'code_challenge' with method S256.")
        if challenge and method != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        # Then CodeChallenge.validate_code_challenge's checks, in its order and words, with
        # each parameter's values read alone (getlist) rather than through payload.datalist,
        # which builds every parameter's list on each use (twice per request there).
        if not challenge and not method:
            return
        if not challenge:
            raise InvalidRequestError("Missing 'code_challenge'")
        if len(data.getlist("code_challenge")) > 1:
            raise InvalidRequestError("Multiple 'code_challenge' in request.")
        if not CODE_CHALLENGE_PATTERN.match(challenge):
            raise InvalidRequestError("Invalid 'code_challenge'")
        if method and method not in self.SUPPORTED_CODE_CHALLENGE_METHOD:
            raise InvalidRequestError("Unsupported 'code_challenge_method'")
        if len(data.getlist("code_challenge_method")) > 1:
            raise InvalidRequestError("Multiple 'code_challenge_method' in request.")


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    _validated_redirect_uri: str | None = None

    @staticmethod
    def validate_no_multiple_request_parameter(request: Any) -> None:
        """Authlib's check (RFC 6749 §3.1), each parameter's values read alone (as above)."""
        data = request.payload.data
        for param in ("response_type", "client_id", "redirect_uri", "scope", "state"):
            if len(data.getlist(param)) > 1:
                raise InvalidRequestError(f"Multiple '{param}' in request.", state=request.payload.state)

    def validate_authorization_request(self) -> str:
        """Authlib's validation, once per request.

        The authorization endpoint asks twice of the same grant (get_consent_grant,
        then create_authorization_response): the request, client and user are the
        same both times, so is the answer.  A failed validation raises (and the grant
        is not used again).
        """
        if self._validated_redirect_uri is None:
            self._validated_redirect_uri = super().validate_authorization_request()
        return self._validated_redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        user: Authorization = request.user
        data = request.payload.data
        payload = {
            "client_id": request.client.client_id,
            "redirect_uri": request.payload.redirect_uri,
            "scope": request.scope,
            "account_id": user.account_id,
            "nonce": data.get("nonce"),
            "code_challenge": data.get("code_challenge"),
            "code_challenge_method": data.get("code_challenge_method"),
            "auth_time": user.auth_time,
            "acr": user.acr,
            "amr": user.amr,
            "sid": user.sid,
            "acting": user.acting,
            "claims": data.get("claims"),
            # The browser's address, for the audit row of the sign-in when the code is
            # redeemed (by the portal, from its own address).
            "browser_ip": logs.client_address(),
        }
        entry = (CODE_KIND, code, payload, _gateway().settings.authorization_code_ttl)
        if getattr(request, "defer_code_write", False):
            # The authorization endpoint stores it with the session's write-back: one
            # round trip, and never for a session that ended meanwhile (sso.oidc.authorize).
            request.code_entry = entry
            return
        _gateway().store.put(*entry)

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
        client: Client = self.request.client
        authorization = tokens.open_grant(
            client,
            authorization_code["account_id"],
            authorization_code["scope"],
            code=authorization_code["_code"],
            sid=authorization_code.get("sid"),
            auth_time=authorization_code.get("auth_time"),
            acr=authorization_code.get("acr"),
            amr=authorization_code.get("amr") or [],
            acting=authorization_code.get("acting"),
            # What Authlib's create_token_response asks of generate_token.
            with_refresh_token=client.check_grant_type("refresh_token"),
            nonce=authorization_code.get("nonce"),
            claims_request=authorization_code.get("claims"),
        )
        if authorization is None:
            return None  # the account is gone
        # A sign-in at this portal (the statistics count these): who, at what level, as
        # whom; recorded when the portal learns who signed in, with the grant it opened.
        from .. import audit

        audit.record(
            audit.SIGN_IN_EVENT,
            commit=False,
            actor=authorization.account_id,
            client_id=client.client_id,
            acr=authorization.acr,
            principal="legal" if authorization.acting else "natural",
            sid=authorization.sid,
            grant=authorization.grant_id,
            browser_ip=authorization_code.get("browser_ip"),
        )
        # The grant, its first refresh token and the audit row, committed before any
        # token is signed, so a replay of the code arriving from now on finds the grant.
        db.session.commit()
        return authorization

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


_REFRESH_TOKENS = RefreshToken.__table__
_GRANTS = Grant.__table__
_ACCOUNTS = Account.__table__
# A grant's account as the refresh sees it: only an active one (a disabled account's
# refresh tokens are refused, as its codes are: sso.oidc.tokens.open_grant).
_ACTIVE_ACCOUNT = (_ACCOUNTS.c.id == _GRANTS.c.account_id) & (_ACCOUNTS.c.status == "active")

# The refresh hot path in Core statements on the session's connection (its
# transaction): no ORM objects, no lazy loads, no autoflush.  Built once.
_LOAD_REFRESH_TOKEN = (
    db.select(
        _REFRESH_TOKENS.c.client_id,
        _REFRESH_TOKENS.c.scope,
        _REFRESH_TOKENS.c.expires_at,
        _REFRESH_TOKENS.c.used_at,
        _GRANTS.c.id,
        _ACCOUNTS.c.id.label("account_id"),  # None: the account is gone or not active
        _GRANTS.c.scope,
        _GRANTS.c.sid,
        _GRANTS.c.auth_time,
        _GRANTS.c.acr,
        _GRANTS.c.amr,
        _GRANTS.c.acting,
        _GRANTS.c.expires_at,
        _GRANTS.c.revoked_at,
    )
    .select_from(
        _REFRESH_TOKENS.join(_GRANTS, _GRANTS.c.id == _REFRESH_TOKENS.c.grant_id).outerjoin(_ACCOUNTS, _ACTIVE_ACCOUNT)
    )
    .where(_REFRESH_TOKENS.c.token_hash == db.bindparam("token_hash"))
)
_CLAIM_REFRESH_TOKEN = (
    db.update(_REFRESH_TOKENS)
    .where(_REFRESH_TOKENS.c.token_hash == db.bindparam("claimed_hash"), _REFRESH_TOKENS.c.used_at.is_(None))
    .values(used_at=db.bindparam("claimed_at"))
)
# PostgreSQL: the claim and the successor's INSERT in one statement (a data-modifying
# CTE): the successor row exists iff this statement's UPDATE flipped used_at.
_CLAIMED = _CLAIM_REFRESH_TOKEN.returning(_REFRESH_TOKENS.c.grant_id).cte("claimed")
_CLAIM_AND_ROTATE = tokens.insert_refresh_token_from(_CLAIMED.c.grant_id, "new_")

# PostgreSQL, the usual refresh (no narrower scope asked): everything in one statement,
# which commits by itself (sso.db.execute_at_once).  The claim (UPDATE ... FROM grants,
# only for a token that is unused, this client's, unexpired, of an unrevoked grant with
# an account, and not a grant that may act for an enterprise), the successor's INSERT
# from the claimed row, and the token with its grant as RETURNING: the same row
# _LOAD_REFRESH_TOKEN reads.  No row: one of those checks fails, and the long way
# (SELECT, then the checks in their order) says which.  A grant whose scope names
# cn_legal_person (a LIKE: any such grant, acting or not, wildcards only widen it) goes
# the long way, whose registry check comes before the token is spent.
_CLAIM_AT_ONCE_CTE = (
    db.update(_REFRESH_TOKENS)
    .where(
        _REFRESH_TOKENS.c.token_hash == db.bindparam("fast_hash"),
        _REFRESH_TOKENS.c.used_at.is_(None),
        _REFRESH_TOKENS.c.client_id == db.bindparam("fast_client_id"),
        _REFRESH_TOKENS.c.expires_at > db.bindparam("fast_now"),
        _GRANTS.c.id == _REFRESH_TOKENS.c.grant_id,
        _GRANTS.c.revoked_at.is_(None),
        _GRANTS.c.scope.not_like(db.bindparam("legal_person_scope", "%cn_legal_person%")),
        _ACTIVE_ACCOUNT,
    )
    .values(used_at=db.bindparam("fast_now"))
    .returning(
        _REFRESH_TOKENS.c.client_id,
        _REFRESH_TOKENS.c.scope,
        _REFRESH_TOKENS.c.expires_at,
        _REFRESH_TOKENS.c.used_at,
        _GRANTS.c.id.label("grant_id"),
        _GRANTS.c.account_id,
        _GRANTS.c.scope.label("grant_scope"),
        _GRANTS.c.sid,
        _GRANTS.c.auth_time,
        _GRANTS.c.acr,
        _GRANTS.c.amr,
        _GRANTS.c.acting,
        _GRANTS.c.expires_at.label("grant_expires_at"),
        _GRANTS.c.revoked_at,
    )
    .cte("claimed")
)
_SUCCESSOR_CTE = (
    _REFRESH_TOKENS.insert()
    .from_select(
        ["token_hash", "grant_id", "client_id", "scope", "created_at", "expires_at"],
        db.select(
            db.bindparam("fast_new_hash", type_=db.String),
            _CLAIM_AT_ONCE_CTE.c.grant_id,
            _CLAIM_AT_ONCE_CTE.c.client_id,
            _CLAIM_AT_ONCE_CTE.c.grant_scope,  # RFC 6749 §6: the grant's full scope
            _CLAIM_AT_ONCE_CTE.c.used_at,
            _CLAIM_AT_ONCE_CTE.c.grant_expires_at,
        ),
    )
    .cte("successor")
)
_CLAIM_AT_ONCE = db.select(_CLAIM_AT_ONCE_CTE).add_cte(_SUCCESSOR_CTE)
# The same statement as psycopg takes it (sso.db.driver_execute), with the values the
# statement carries itself (the account status it requires).
_CLAIM_AT_ONCE_COMPILED = _CLAIM_AT_ONCE.compile(dialect=psycopg_dialect())
_CLAIM_AT_ONCE_SQL = DriverSQL(str(_CLAIM_AT_ONCE_COMPILED))
_CLAIM_AT_ONCE_FIXED = {k: v for k, v in _CLAIM_AT_ONCE_COMPILED.params.items() if not k.startswith("fast_")}
# Its undoing, when the answer could not be made after all (sso.oidc.grants
# RefreshTokenGrant.create_token_response): the presented token unused again (only if
# it still carries this claim) and the successor, never handed out, gone.  One
# statement, committing by itself.
_RESTORED = (
    db.update(_REFRESH_TOKENS)
    .where(_REFRESH_TOKENS.c.token_hash == db.bindparam("undo_hash"))
    .where(_REFRESH_TOKENS.c.used_at == db.bindparam("undo_claimed_at"))
    .values(used_at=db.null())
    .returning(_REFRESH_TOKENS.c.token_hash)
    .cte("restored")
)
_UNDO_CLAIM = (
    db.delete(_REFRESH_TOKENS)
    .where(_REFRESH_TOKENS.c.token_hash == db.bindparam("undo_new_hash"), _REFRESH_TOKENS.c.used_at.is_(None))
    .add_cte(_RESTORED)
    .returning(_REFRESH_TOKENS.c.token_hash)
)
_UNDO_CLAIM_SQL = DriverSQL(str(_UNDO_CLAIM.compile(dialect=psycopg_dialect())))


class RefreshCredential:
    """A presented refresh token with its grant, as read by one joined SELECT."""

    __slots__ = (
        "token_hash",
        "client_id",
        "scope",
        "expires_at",
        "used_at",
        "grant_id",
        "account_id",
        "grant_scope",
        "sid",
        "auth_time",
        "acr",
        "amr",
        "acting",
        "grant_expires_at",
        "grant_revoked_at",
        "successor",
    )

    def __init__(self, token_hash: str, row: Any) -> None:
        self.token_hash = token_hash
        self.successor: str | None = None  # set: claimed already, this successor stored
        (
            self.client_id,
            self.scope,
            self.expires_at,
            self.used_at,
            self.grant_id,
            self.account_id,
            self.grant_scope,
            self.sid,
            self.auth_time,
            self.acr,
            self.amr,
            self.acting,
            self.grant_expires_at,
            self.grant_revoked_at,
        ) = row

    def acts_for_an_enterprise(self) -> bool:
        """Whether the legal-person context must be re-checked before the token is spent."""
        return bool(self.acting) and "cn_legal_person" in (self.grant_scope or "").split()

    # ---- what Authlib's refresh grant asks of a credential -------------------
    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id  # type: ignore[no-any-return]

    def get_scope(self) -> str:
        return self.scope  # type: ignore[no-any-return]


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """Rotation on every use; a rotated token presented again revokes its grant.

    The long way: one SELECT (the token joined with its grant), the checks in their
    order, the claim with the successor's INSERT (one statement on PostgreSQL, two
    elsewhere), one COMMIT after the answer is made.  The usual refresh on PostgreSQL
    (no narrower scope, no legal-person grant) is one statement that does all three and
    commits by itself (one round trip), undone if the answer then cannot be made.
    """

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation on every use (RFC 9700 §4.14.2)

    # Set by _claim_at_once: what undoes its claim (already committed) if no answer follows.
    _claimed_at_once: dict[str, Any] | None = None

    def create_token_response(self):  # type: ignore[no-untyped-def]
        """Authlib's, with the claim made at once undone when the answer fails.

        The long way commits its claim after the answer is made (save_token), so a
        failure before leaves the token usable.  The claim made at once has committed
        already: on any failure between it and the answer (the signature, here) it is
        undone — the token usable again, its successor deleted — so the client's retry
        is a refresh, not a reuse that would revoke the whole grant.
        """
        try:
            return super().create_token_response()
        except BaseException:
            undo = self._claimed_at_once
            if undo is not None:
                self._claimed_at_once = None
                try:
                    execute_at_once(_UNDO_CLAIM_SQL, undo)
                except Exception as error:  # noqa: BLE001 - the original failure is the answer
                    import logging

                    logging.getLogger("sso.oidc").warning(
                        "undoing a refresh token's claim failed: %s", error.__class__.__name__
                    )
            raise

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshCredential | None:
        if not isinstance(refresh_token, str) or len(refresh_token) > 256:
            return None
        hashed = token_hash(refresh_token)
        if not self.request.payload.scope and db.engine.dialect.driver == "psycopg":
            claimed = self._claim_at_once(hashed)
            if claimed is not None:
                return claimed
        row = db.session.connection().execute(_LOAD_REFRESH_TOKEN, {"token_hash": hashed}).first()
        if row is None:
            return None
        token = RefreshCredential(hashed, row)
        if token.client_id != self.request.client.client_id:
            return None
        if token.used_at is not None:
            # A rotated token came back: someone holds a stolen copy. Revoke the family.
            tokens.revoke_grant(token.grant_id, "refresh_reuse")
            from .. import audit

            audit.record("token.refresh_reuse", outcome="failure", client_id=token.client_id, grant=token.grant_id)
            return None
        if token.grant_revoked_at is not None or token.expires_at <= utcnow():
            return None
        return token

    def _claim_at_once(self, hashed: str) -> RefreshCredential | None:
        """PostgreSQL: claim, store the successor and read the grant in one statement.

        Only for a token that passes every check the long way makes before its claim
        (the statement's WHERE; the scope check has nothing to check: no scope was
        asked) and whose grant needs no registry check (none that may act for an
        enterprise: that check must come before the token is spent, so such a grant
        goes the long way).  None: nothing claimed; the caller goes the long way.

        The statement commits by itself (sso.db.execute_at_once: psycopg's autocommit
        on a pooled connection of its own, given back at once): no BEGIN and no COMMIT
        round trip, no transaction held open while the answer is signed.  What undoes
        it is kept for ``create_token_response``, should the answer fail after all.
        """
        successor = new_token(32)
        successor_hash = token_hash(successor)
        now = utcnow()
        params = dict(_CLAIM_AT_ONCE_FIXED)
        params["fast_hash"] = hashed
        params["fast_client_id"] = self.request.client.client_id
        params["fast_now"] = now
        params["fast_new_hash"] = successor_hash
        row = execute_at_once(_CLAIM_AT_ONCE_SQL, params)
        if row is None:
            return None  # nothing claimed: the long way, on the session, says why
        self._claimed_at_once = {"undo_hash": hashed, "undo_claimed_at": now, "undo_new_hash": successor_hash}
        token = RefreshCredential(hashed, row)
        token.used_at = None  # as read before the claim
        token.successor = successor
        return token

    def authenticate_user(self, refresh_token: RefreshCredential) -> Authorization | None:
        if refresh_token.successor is not None:
            return self._authorization(refresh_token, refresh_token.successor)  # claimed at once
        grant_id = refresh_token.grant_id
        if refresh_token.acts_for_an_enterprise():
            # Acting for an enterprise ends at once (authorisation revoked or past its
            # valid_until, licence revoked, new legal representative): checked before the
            # token is spent, so a registry outage does not burn it (retry later).
            from authlib.oauth2 import OAuth2Error

            from .. import legal
            from ..connectors.base import RegistryUnavailable

            try:
                valid = legal.still_valid(refresh_token.acting)
            except RegistryUnavailable:
                unavailable = OAuth2Error("The enterprise registry cannot be reached now. Try again later.")
                unavailable.error, unavailable.status_code = "temporarily_unavailable", 503
                raise unavailable from None
            if not valid:
                tokens.revoke_grant(grant_id, "acting_ended")
                raise InvalidGrantError("The authorisation to act for this enterprise has ended.")
        # The account as read with the token: None when it is gone or no longer active.
        if refresh_token.account_id is None:
            raise InvalidGrantError("The account of this refresh token is not active.")
        # The atomic step: only the request whose UPDATE flips used_at may issue, and
        # the successor is stored in the same transaction. Neither is committed here:
        # they commit together (save_token), so a crash or a database error in between
        # leaves the old token usable instead of turning the client's retry into
        # "reuse" that revokes the whole grant. The UPDATE's row lock (PostgreSQL) or
        # write lock (SQLite) makes a concurrent use wait, then find it used.
        # RFC 6749 §6: the successor keeps the grant's full scope, even when this
        # access token is asked for less.
        successor = self._claim_and_rotate(refresh_token)
        if successor is None:
            db.session.rollback()
            tokens.revoke_grant(grant_id, "refresh_reuse")
            raise InvalidGrantError("The refresh token was already used.")
        return self._authorization(refresh_token, successor)

    @staticmethod
    def _authorization(refresh_token: RefreshCredential, successor: str) -> Authorization:
        return Authorization(
            account_id=refresh_token.account_id,
            grant_id=refresh_token.grant_id,
            sid=refresh_token.sid,
            auth_time=refresh_token.auth_time,
            acr=refresh_token.acr,
            amr=list(refresh_token.amr or []),
            acting=refresh_token.acting,
            grant_scope=refresh_token.grant_scope,
            grant_expires_at=refresh_token.grant_expires_at,
            issued_refresh_token=successor,
        )

    def _claim_and_rotate(self, refresh_token: RefreshCredential) -> str | None:
        """Mark the presented token used and store its successor; None if it was used already."""
        conn = db.session.connection()
        client = self.request.client
        now = utcnow()
        if conn.dialect.name == "postgresql":
            successor = new_token(32)
            stored = conn.execute(
                _CLAIM_AND_ROTATE,
                {
                    "claimed_hash": refresh_token.token_hash,
                    "claimed_at": now,
                    "new_hash": token_hash(successor),
                    "new_client_id": client.client_id,
                    "new_scope": refresh_token.grant_scope,
                    "new_created_at": now,
                    "new_expires_at": refresh_token.grant_expires_at,
                },
            ).rowcount
            return successor if stored == 1 else None
        claimed = conn.execute(_CLAIM_REFRESH_TOKEN, {"claimed_hash": refresh_token.token_hash, "claimed_at": now})
        if claimed.rowcount != 1:
            return None
        return tokens.store_refresh_token(
            refresh_token.grant_id, client, refresh_token.grant_scope, refresh_token.grant_expires_at
        )

    def revoke_old_credential(self, refresh_token: RefreshCredential) -> None:
        """Already marked used in ``authenticate_user``, committed by ``save_token``."""

    def save_token(self, token: dict[str, Any]) -> None:
        # The claim and the successor, together (one fsync); a claim made at once has
        # committed by itself.
        if self._claimed_at_once is None:
            db.session.commit()


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    # No "none": a public client has no credentials to present (RFC 6749 §4.4).
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def save_token(self, token: dict[str, Any]) -> None:
        """Stateless JWT: nothing to persist."""


def auth_time_now() -> int:
    return int(time.time())
