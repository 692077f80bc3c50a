"""Portal (client) administration as plain functions; ``sso clients ...`` wraps them.

Redirect URIs are validated at registration (RFC 9700 §2.1, OAuth 2.1 §2.3.1):
absolute, no fragment, https — loopback http only in development.  Secrets are
generated here (256 bits), shown once, and stored only as a keyed hash.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from . import audit
from .crypto import new_token
from .db import db
from .models import Client, Consent, Grant, utcnow

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
SIGNING_ALGS = ("RS256", "ES256")
SUBJECT_TYPES = ("pairwise", "public")
HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")
# Safe in a URL, in HTTP Basic (no ':') and within the 64-character column.
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")
# JWK members that only a private or symmetric key has (RFC 7517 / 7518 §6).
PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
MIN_RSA_BITS = 2048


class ClientError(ValueError):
    """Invalid administrative input; the message is shown to the administrator."""


class UnknownClient(ClientError):
    """No portal is registered under the given client id."""


@dataclass
class Registration:
    client: Client
    client_secret: str | None  # shown once, never stored


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_uri(uri: str, *, development: bool, what: str = "redirect URI") -> str:
    if not isinstance(uri, str) or not uri or len(uri) > 500:
        raise ClientError(f"{what} must be a non-empty URL of at most 500 characters")
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError as exc:
        raise ClientError(f"{what} is not a valid URL: {uri}") from exc
    if not parts.scheme or not parts.netloc:
        raise ClientError(f"{what} must be absolute: {uri}")
    if parts.fragment or "#" in uri:
        raise ClientError(f"{what} must not contain a fragment: {uri}")
    if parts.username or parts.password:
        raise ClientError(f"{what} must not contain user information: {uri}")
    if parts.scheme == "https":
        return uri
    if parts.scheme == "http" and development and _is_loopback(host):
        return uri
    if parts.scheme == "http" and _is_loopback(host):
        raise ClientError(f"{what} may use http on loopback only in development: {uri}")
    raise ClientError(f"{what} must use https: {uri}")


def validate_jwks(jwks: Any) -> list[str]:
    """Problems with a portal's public JWKS for private_key_jwt (empty list: fine)."""
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        return ["the JWKS must be an object with a non-empty 'keys' list"]
    problems: list[str] = []
    for index, jwk in enumerate(jwks["keys"]):
        if not isinstance(jwk, dict):
            problems.append(f"JWKS key {index} is not an object")
            continue
        if jwk.get("kty") not in ("RSA", "EC"):
            problems.append(f"JWKS key {index}: kty must be RSA or EC, got {jwk.get('kty')!r}")
            continue
        private = [m for m in PRIVATE_JWK_MEMBERS if m in jwk]
        if private:
            problems.append(
                f"JWKS key {index} holds private key material ({', '.join(private)}): register only the public key"
            )
            continue
        if jwk.get("use", "sig") != "sig":
            problems.append(f"JWKS key {index}: use must be 'sig'")
            continue
        try:
            key = KeySet.import_key_set({"keys": [jwk]}).keys[0]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            problems.append(f"JWKS key {index} is not a valid public key: {exc}")
            continue
        if jwk["kty"] == "RSA" and key.raw_value.key_size < MIN_RSA_BITS:
            problems.append(f"JWKS key {index}: RSA keys must have at least {MIN_RSA_BITS} bits")
    return problems


def validate_subject(subject_type: str, sector_identifier: str | None) -> list[str]:
    """OIDC Core §8: the subject type, and the sector that pairwise subjects derive from."""
    problems: list[str] = []
    if subject_type not in SUBJECT_TYPES:
        problems.append(f"subject type must be one of {', '.join(SUBJECT_TYPES)}")
    if sector_identifier:
        if subject_type != "pairwise":
            problems.append("a sector identifier applies only to pairwise subjects")
        if "://" in sector_identifier:
            try:
                validate_uri(sector_identifier, development=False, what="sector identifier URI")
            except ClientError as exc:
                problems.append(str(exc))
        elif not HOSTNAME.fullmatch(sector_identifier):
            problems.append(f"sector identifier must be a host name or an https URI: {sector_identifier}")
    return problems


def _settings():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"].settings


def _hash(secret: str) -> str:
    return current_app.extensions["sso"].secret_hasher.hash(secret)  # type: ignore[no-any-return]


def _forget(client_id: str) -> None:
    """This process's cached copy of the registration is stale now (others: client_cache_ttl)."""
    server = current_app.extensions["sso"].server
    if server is not None:
        server.client_cache.invalidate(client_id)


def _validate(
    *,
    name: str,
    redirect_uris: list[str],
    post_logout_redirect_uris: list[str],
    grant_types: list[str],
    auth_method: str,
    alg: str,
    jwks: dict[str, Any] | None,
    scope: str,
) -> None:
    dev = _settings().development
    problems: list[str] = []
    if not name or len(name) > 200:
        problems.append("name must be 1 to 200 characters")
    for group, what in (
        (redirect_uris, "redirect URI"),
        (post_logout_redirect_uris, "post-logout redirect URI"),
    ):
        for uri in group:
            try:
                validate_uri(uri, development=dev, what=what)
            except ClientError as exc:
                problems.append(str(exc))
    unknown = [g for g in grant_types if g not in GRANT_TYPES]
    if unknown:
        problems.append(f"unknown grant type(s): {', '.join(unknown)}; choose from {', '.join(GRANT_TYPES)}")
    if not grant_types:
        problems.append("at least one grant type is required")
    if "authorization_code" in grant_types and not redirect_uris:
        problems.append("authorization_code needs at least one --redirect-uri")
    if auth_method not in AUTH_METHODS:
        problems.append(f"unknown auth method {auth_method!r}; choose from {', '.join(AUTH_METHODS)}")
    if auth_method == "none" and "client_credentials" in grant_types:
        problems.append("a public client cannot use client_credentials")
    if auth_method == "private_key_jwt" and not jwks:
        problems.append("private_key_jwt needs the client's public keys (--jwks-file)")
    elif auth_method == "private_key_jwt":
        problems.extend(validate_jwks(jwks))
    elif jwks:
        problems.append("a JWKS (--jwks-file) is only used with the private_key_jwt auth method")
    if alg not in SIGNING_ALGS:
        problems.append(f"id_token_signed_response_alg must be one of {', '.join(SIGNING_ALGS)}")
    if len(scope) > 500:
        problems.append("scope is too long")
    elif "authorization_code" in grant_types and "openid" not in scope.split():
        # The authorization endpoint refuses any request without the openid scope.
        problems.append("the scope of an authorization_code client must include 'openid'")
    if problems:
        raise ClientError("; ".join(problems))


def create_client(
    *,
    name: str,
    redirect_uris: list[str],
    post_logout_redirect_uris: list[str] | None = None,
    grant_types: list[str] | None = None,
    auth_method: str | None = None,
    public: bool = False,
    scope: str = "openid profile",
    id_token_signed_response_alg: str | None = None,
    jwks: dict[str, Any] | None = None,
    client_id: str | None = None,
    subject_type: str = "pairwise",
    sector_identifier: str | None = None,
    full_id_number_allowed: bool = False,
    backchannel_logout_uri: str | None = None,
    frontchannel_logout_uri: str | None = None,
) -> Registration:
    method = auth_method or ("none" if public else "client_secret_basic")
    if public and method != "none":
        raise ClientError("a public client authenticates with 'none'")
    if client_id is not None and not CLIENT_ID.fullmatch(client_id):
        raise ClientError(
            "client id must be 1 to 64 characters: letters, digits, '.', '_', '~' or '-', "
            "starting with a letter or digit"
        )
    grants = list(grant_types or ["authorization_code", "refresh_token"])
    alg = id_token_signed_response_alg or _settings().default_signing_alg
    post_logout = list(post_logout_redirect_uris or [])
    _validate(
        name=name,
        redirect_uris=redirect_uris,
        post_logout_redirect_uris=post_logout,
        grant_types=grants,
        auth_method=method,
        alg=alg,
        jwks=jwks,
        scope=scope,
    )
    problems = validate_subject(subject_type, sector_identifier) + _logout_uri_problems(
        backchannel_logout_uri, frontchannel_logout_uri
    )
    if problems:
        raise ClientError("; ".join(problems))
    cid = client_id or "portal-" + secrets.token_hex(8)
    if db.session.execute(db.select(Client).filter_by(client_id=cid)).scalar_one_or_none():
        raise ClientError(f"client id {cid} is already registered")
    secret = new_token(32) if method in ("client_secret_basic", "client_secret_post") else None
    client = Client(
        client_id=cid,
        client_secret_hash=_hash(secret) if secret else None,
        name=name,
        redirect_uris=list(dict.fromkeys(redirect_uris)),
        post_logout_redirect_uris=list(dict.fromkeys(post_logout)),
        grant_types=grants,
        scope=scope,
        token_endpoint_auth_method=method,
        jwks=jwks,
        id_token_signed_response_alg=alg,
        subject_type=subject_type,
        sector_identifier=sector_identifier or None,
        full_id_number_allowed=full_id_number_allowed,
        backchannel_logout_uri=backchannel_logout_uri or None,
        frontchannel_logout_uri=frontchannel_logout_uri or None,
    )
    db.session.add(client)
    audit.record("client.created", client_id=cid, commit=False, auth_method=method)
    db.session.commit()
    _forget(cid)
    return Registration(client, secret)


def _logout_uri_problems(backchannel: str | None, frontchannel: str | None) -> list[str]:
    """Logout URIs follow the redirect URI rules (Back-Channel Logout §2.2, Front-Channel §2)."""
    problems = []
    for uri, what in ((backchannel, "back-channel logout URI"), (frontchannel, "front-channel logout URI")):
        if uri:
            try:
                validate_uri(uri, development=_settings().development, what=what)
            except ClientError as exc:
                problems.append(str(exc))
    return problems


def get_client(client_id: str) -> Client:
    client = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one_or_none()
    if client is None:
        raise UnknownClient(f"no client with id {client_id}")
    return client


def list_clients() -> list[Client]:
    return list(db.session.execute(db.select(Client).order_by(Client.id)).scalars())


def update_client(
    client_id: str,
    *,
    name: str | None = None,
    redirect_uris: list[str] | None = None,
    post_logout_redirect_uris: list[str] | None = None,
    scope: str | None = None,
    id_token_signed_response_alg: str | None = None,
    enable: bool | None = None,
    full_id_number_allowed: bool | None = None,
    backchannel_logout_uri: str | None = None,
    frontchannel_logout_uri: str | None = None,
) -> Client:
    client = get_client(client_id)
    problems = _logout_uri_problems(backchannel_logout_uri, frontchannel_logout_uri)
    if problems:
        raise ClientError("; ".join(problems))
    # "" clears a logout URI; None leaves it as it is.
    if backchannel_logout_uri is not None:
        client.backchannel_logout_uri = backchannel_logout_uri or None
    if frontchannel_logout_uri is not None:
        client.frontchannel_logout_uri = frontchannel_logout_uri or None
    _validate(
        name=name if name is not None else client.name,
        redirect_uris=redirect_uris if redirect_uris is not None else client.redirect_uris,
        post_logout_redirect_uris=(
            post_logout_redirect_uris if post_logout_redirect_uris is not None else client.post_logout_redirect_uris
        ),
        grant_types=client.grant_types,
        auth_method=client.token_endpoint_auth_method,
        alg=id_token_signed_response_alg or client.id_token_signed_response_alg,
        jwks=client.jwks,
        scope=scope if scope is not None else client.scope,
    )
    if name is not None:
        client.name = name
    if redirect_uris is not None:
        _keep_sector(client, redirect_uris)
        client.redirect_uris = list(dict.fromkeys(redirect_uris))
    if post_logout_redirect_uris is not None:
        client.post_logout_redirect_uris = list(dict.fromkeys(post_logout_redirect_uris))
    if scope is not None:
        client.scope = scope
    if id_token_signed_response_alg is not None:
        client.id_token_signed_response_alg = id_token_signed_response_alg
    if enable is not None:
        client.disabled = not enable
    if full_id_number_allowed is not None:
        client.full_id_number_allowed = full_id_number_allowed
    event = "client.updated" if enable is None else ("client.enabled" if enable else "client.disabled")
    audit.record(event, client_id=client_id, commit=False)
    db.session.commit()
    _forget(client_id)
    return client


def _redirect_host(uris: list[str] | None) -> str | None:
    return urlsplit(uris[0]).hostname if uris else None


def _keep_sector(client: Client, new_redirect_uris: list[str]) -> None:
    """Keep pairwise ``sub`` values stable when the redirect URIs move to another host.

    Without a registered sector identifier, a pairwise portal's sector is the host
    of its first redirect URI (OIDC Core §8.1), so a new host would silently give
    every person a new ``sub`` at that portal.  Pin the old host as the sector.
    """
    if client.subject_type != "pairwise" or client.sector_identifier:
        return
    old = _redirect_host(client.redirect_uris)
    if old and old != _redirect_host(new_redirect_uris):
        client.sector_identifier = old


def rotate_secret(client_id: str) -> str:
    client = get_client(client_id)
    if client.token_endpoint_auth_method not in ("client_secret_basic", "client_secret_post"):
        raise ClientError(f"client {client_id} does not use a client secret")
    secret = new_token(32)
    client.client_secret_hash = _hash(secret)
    audit.record("client.secret_rotated", client_id=client_id, commit=False)
    db.session.commit()
    _forget(client_id)
    return secret


def disable_client(client_id: str) -> Client:
    return update_client(client_id, enable=False)


def delete_client(client_id: str) -> None:
    """Delete a registration and everything granted to it.

    Grants (and so their refresh and access tokens) are revoked and consents
    dropped: a portal registered later under the same id starts from nothing.
    """
    client = get_client(client_id)
    db.session.execute(
        db.update(Grant)
        .where(Grant.client_id == client_id, Grant.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason="client_deleted")
    )
    db.session.execute(db.delete(Consent).where(Consent.client_id == client_id))
    db.session.delete(client)
    audit.record("client.deleted", client_id=client_id, commit=False)
    db.session.commit()
    _forget(client_id)


def describe(client: Client) -> dict[str, Any]:
    """What `sso clients show/list --json` prints: never the secret or its hash."""
    return {
        "client_id": client.client_id,
        "name": client.name,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "grant_types": client.grant_types,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "public": client.is_public,
        "scope": client.scope,
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
        "has_jwks": bool(client.jwks),
        "subject_type": client.subject_type,
        "sector_identifier": client.sector_identifier,
        "full_id_number_allowed": bool(client.full_id_number_allowed),
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "frontchannel_logout_uri": client.frontchannel_logout_uri,
        "disabled": client.disabled,
        "created_at": client.created_at.isoformat() + "Z",
    }
