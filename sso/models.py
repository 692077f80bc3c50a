"""Durable data: portals (clients), accounts, consents, grants, refresh tokens, keys, audit.

Bearer secrets never appear here in clear: codes and refresh tokens by SHA-256,
client secrets by keyed HMAC, private keys sealed under the key-encryption key.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .db import db


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


class Client(db.Model):  # type: ignore[name-defined]
    """A federated service portal (an OAuth client), with Authlib's ClientMixin methods."""

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    client_secret_hash: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    scope: Mapped[str] = mapped_column(String(500), default="openid profile")
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(40))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(String(500))
    id_token_signed_response_alg: Mapped[str] = mapped_column(String(10), default="RS256")
    # OIDC Core §8: pairwise by default, so portals cannot correlate a citizen.
    subject_type: Mapped[str] = mapped_column(String(10), default="pairwise")
    # §8.1: portals sharing a sector see the same sub; default is the redirect host.
    sector_identifier: Mapped[str | None] = mapped_column(String(255))
    # Admin approval to receive the full resident identity number (with consent).
    full_id_number_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(500))
    frontchannel_logout_uri: Mapped[str | None] = mapped_column(String(500))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    # ---- Authlib ClientMixin -------------------------------------------
    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    @property
    def client_metadata(self) -> dict[str, Any]:
        # Authlib's RP-initiated logout endpoint reads registered URIs from here.
        return {"post_logout_redirect_uris": list(self.post_logout_redirect_uris or [])}

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # OAuth 2.1 / RFC 9700 §2.1: the redirect_uri is always required, so there is
        # no default: a request without one is refused, never redirected.
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.scope.split())
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string comparison (RFC 9700 §4.1.3): no prefix, case or path folding.
        return redirect_uri in (self.redirect_uris or [])

    def check_client_secret(self, client_secret: str) -> bool:
        hasher = current_app.extensions["sso"].secret_hasher
        return bool(hasher.verify(client_secret, self.client_secret_hash))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in (self.grant_types or [])

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in (self.grant_types or [])


class Account(db.Model):  # type: ignore[name-defined]
    """A person who signs in at the gateway.

    Citizens register after real-name verification against the population
    registry: their resident identity number is kept sealed (AES-GCM) and looked
    up through a keyed hash, and only its masked form is stored in clear.
    ``username`` serves local accounts (operators, the demo) that have no number.
    """

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    id_number_hmac: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    id_number_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    id_number_masked: Mapped[str | None] = mapped_column(String(18))
    phone: Mapped[str | None] = mapped_column(String(20), unique=True, index=True)
    phone_verified_at: Mapped[datetime | None] = mapped_column(DateTime)
    password_hash: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str] = mapped_column(String(100))
    connector_id: Mapped[str] = mapped_column(String(40), default="local")
    # self-asserted | registry-verified (the identity-assurance half of acr)
    assurance: Mapped[str] = mapped_column(String(20), default="self-asserted")
    verified_at: Mapped[datetime | None] = mapped_column(DateTime)
    verification_source: Mapped[str | None] = mapped_column(String(60))
    # Registry attributes as verified (name, birthdate, gender, address ...): the
    # once-only rule — a portal never asks again for what the registry confirmed.
    verified_attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="active")
    # Gateway administrator: may see the statistics pages (granted by the CLI only).
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SecondFactor(db.Model):  # type: ignore[name-defined]
    """A TOTP authenticator bound to an account (RFC 6238), secret sealed under the KEK."""

    __tablename__ = "second_factors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10), default="totp")
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The last accepted time step: a code is never accepted twice (RFC 6238 §5.2).
    last_step: Mapped[int] = mapped_column(Integer, default=0)


class RecoveryCode(db.Model):  # type: ignore[name-defined]
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(128))
    used_at: Mapped[datetime | None] = mapped_column(DateTime)


class AgentAuthorisation(db.Model):  # type: ignore[name-defined]
    """A legal representative lets a person act for the enterprise, in roles, for a period.

    pending (granted, awaiting the agent's confirmation) → active → revoked;
    or pending → declined.  Validity is checked on every use, refresh included.
    """

    __tablename__ = "agent_authorisations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    credit_code: Mapped[str] = mapped_column(String(18), index=True)
    enterprise_name: Mapped[str] = mapped_column(String(200))
    grantor_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    agent_account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    valid_from: Mapped[datetime] = mapped_column(DateTime)
    valid_until: Mapped[datetime] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(32))


class Consent(db.Model):  # type: ignore[name-defined]
    """Scopes a person allowed a portal to receive; remembered until revoked."""

    __tablename__ = "consents"
    __table_args__ = (Index("uq_consent_account_client", "account_id", "client_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    granted_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Grant(db.Model):  # type: ignore[name-defined]
    """One authorisation: the family of tokens issued from one code (or refresh chain).

    Revoking the grant revokes every refresh token in the family and every access
    token carrying its id (RFC 9700 §4.14; RFC 6749 §4.1.2 code reuse).
    """

    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    scope: Mapped[str] = mapped_column(String(500), default="")
    # SHA-256 of the authorization code that opened this grant: a second redemption
    # of the same code finds the grant here even after the short-lived store forgot it.
    code_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    sid: Mapped[str | None] = mapped_column(String(64), index=True)
    auth_time: Mapped[int | None] = mapped_column(Integer)
    acr: Mapped[str | None] = mapped_column(String(100))
    amr: Mapped[list[str] | None] = mapped_column(JSON)
    # For a legal-person session: which enterprise, in which role, under which
    # authorisation — re-checked on every refresh.
    acting: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(40))

    refresh_tokens: Mapped[list[RefreshToken]] = relationship(
        back_populates="grant", cascade="all, delete-orphan", passive_deletes=True
    )


class RefreshToken(db.Model):  # type: ignore[name-defined]
    """A refresh token, by hash. ``used_at`` set means rotated: presenting it again is reuse."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime)

    grant: Mapped[Grant] = relationship(back_populates="refresh_tokens")

    # ---- what Authlib's refresh grant asks of a credential -------------------
    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope


class RevokedAccessToken(db.Model):  # type: ignore[name-defined]
    """Access tokens revoked one by one (RFC 7009); kept until they would have expired."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class UsedClientAssertion(db.Model):  # type: ignore[name-defined]
    """``jti`` of private_key_jwt assertions already accepted (RFC 7523 §3 replay)."""

    __tablename__ = "used_client_assertions"

    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class SigningKey(db.Model):  # type: ignore[name-defined]
    """A signing key: public JWK in clear, private key sealed under the KEK."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    private_key_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Published from created_at; signs from activates_at on (publish before sign).
    activates_at: Mapped[datetime] = mapped_column(DateTime)


class AuditEvent(db.Model):  # type: ignore[name-defined]
    """An append-only, hash-chained record of security-relevant events (no secrets, masked identifiers).

    Rows are written only by ``sso.audit.record`` (through ``sso.audit_chain.append``):
    ``id`` is the chain position (1, 2, 3 ... without gaps), ``prev_hash`` the
    ``row_hash`` of the row before, ``row_hash`` the SHA-256 of the row's canonical form.
    """

    __tablename__ = "audit_events"

    # Assigned from audit_chain_head under its lock, never by a sequence: a gap is a deleted row.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(60), index=True)
    outcome: Mapped[str] = mapped_column(String(20), default="success")
    actor: Mapped[str | None] = mapped_column(String(64))
    client_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(db.Model):  # type: ignore[name-defined]
    """The single row (id 1) naming the audit chain's last position and hash.

    Every append updates it first, so appends from any thread or process are
    serialised on it: the row lock on PostgreSQL, the write lock on SQLite.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class SessionRecord(db.Model):  # type: ignore[name-defined]
    """The durable index of browser sessions: who is signed in where, for single logout.

    The session itself lives in the short-lived store; this row survives it, so the
    portals can be told when a session ends for any reason — logout, revocation,
    idle or absolute expiry — by whichever instance notices first.
    """

    __tablename__ = "session_records"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    handle: Mapped[str | None] = mapped_column(String(64))
    clients: Mapped[list[str]] = mapped_column(JSON, default=list)
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # When the idle timeout would end it if nobody comes back (refreshed lazily).
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    absolute_expires_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    end_reason: Mapped[str | None] = mapped_column(String(30))


class LogoutDelivery(db.Model):  # type: ignore[name-defined]
    """One back-channel logout notification (OIDC Back-Channel Logout 1.0 §2.5) and its fate."""

    __tablename__ = "logout_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(12), default="pending", index=True)  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)
