"""Claims: what a portal learns about a person, scope by scope — and nothing more.

* ``sub`` is pairwise by default (OIDC Core §8.1): an HMAC of the sector and the
  account, so two portals in different sectors cannot correlate a citizen.
* Registry-verified attributes come as ``verified_claims`` (OpenID Connect for
  Identity Assurance 1.0 §5), so a portal never asks again for what the
  registry confirmed (the once-only rule).
* The resident identity number is masked unless an administrator approved the
  portal for the full number *and* the person consented to ``cn_identity``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from .models import Account, Client

SCOPES = ["openid", "profile", "phone", "address", "cn_identity", "cn_legal_person"]

# The claims each scope releases (OIDC Core §5.4 plus this gateway's own).
SCOPE_CLAIMS: dict[str, list[str]] = {
    "profile": ["name", "gender", "birthdate", "preferred_username"],
    "phone": ["phone_number", "phone_number_verified"],
    "address": ["address"],
    "cn_identity": ["cn_id_number_masked", "cn_id_number"],
    "cn_legal_person": ["cn_legal_person"],
}

CLAIMS_SUPPORTED = sorted(
    {"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid", "at_hash", "verified_claims"}
    | {c for claims in SCOPE_CLAIMS.values() for c in claims}
)

TRUST_FRAMEWORK = "cn_population_registry"
REGISTRY_NAME = "全国人口基础信息库"


def _gw():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


def sector_of(client: Client) -> str:
    """OIDC Core §8.1: the sector is the registered sector identifier, else the redirect host."""
    if client.sector_identifier:
        return client.sector_identifier
    uris = client.redirect_uris or []
    host = urlsplit(uris[0]).hostname if uris else None
    return host or client.client_id


def subject_for(client: Client, account: Account) -> str:
    if client.subject_type == "public":
        return account.id
    key = _gw().pairwise_key
    mac = hmac.new(key, f"{sector_of(client)}|{account.id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _e164(phone: str) -> str:
    return "+86" + phone if not phone.startswith("+") else phone


def _verified_claims(account: Account, released: dict[str, Any]) -> dict[str, Any] | None:
    """OIDC4IDA §5: the registry-confirmed subset of what this portal may see."""
    if account.assurance != "registry-verified" or account.verified_at is None:
        return None
    confirmed = {k: v for k, v in released.items() if k in ("name", "gender", "birthdate", "address", "cn_id_number")}
    if "cn_id_number_masked" in released:
        confirmed["cn_id_number_masked"] = released["cn_id_number_masked"]
    if not confirmed:
        return None
    return {
        "verification": {
            "trust_framework": TRUST_FRAMEWORK,
            "time": account.verified_at.replace(microsecond=0).isoformat() + "Z",
            "evidence": [
                {
                    "type": "electronic_record",
                    "record": {"type": "population_registry", "source": {"name": REGISTRY_NAME, "country_code": "CHN"}},
                }
            ],
        },
        "claims": confirmed,
    }


def _address(attrs: dict[str, Any]) -> dict[str, Any] | None:
    formatted = attrs.get("address")
    if not formatted:
        return None
    out: dict[str, Any] = {"formatted": formatted, "country": "CN"}
    code = attrs.get("region_code")
    if code:
        from .regions import county

        region = county(code)
        if region is not None:
            out["region"] = region.province
            out["locality"] = region.prefecture or region.province
    return out


def user_claims(
    account: Account,
    client: Client,
    scopes: list[str],
    acting: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """UserInfo claims for the granted scopes (OIDC Core §5.3.2)."""
    from .accounts import id_number_of

    attrs = account.verified_attributes or {}
    claims: dict[str, Any] = {"sub": subject_for(client, account)}
    if "profile" in scopes:
        claims["name"] = attrs.get("name") or account.display_name
        if attrs.get("gender"):
            claims["gender"] = attrs["gender"]
        if attrs.get("birthdate"):
            claims["birthdate"] = attrs["birthdate"]
        if account.username:
            claims["preferred_username"] = account.username
    if "phone" in scopes and account.phone:
        claims["phone_number"] = _e164(account.phone)
        claims["phone_number_verified"] = account.phone_verified_at is not None
    if "address" in scopes:
        address = _address(attrs)
        if address:
            claims["address"] = address
    if "cn_identity" in scopes and account.id_number_masked:
        claims["cn_id_number_masked"] = account.id_number_masked
        if client.full_id_number_allowed:
            # Consent to cn_identity was given on a page that named the full number.
            claims["cn_id_number"] = id_number_of(account)
    if "cn_legal_person" in scopes and acting:
        claims["cn_legal_person"] = legal_person_claim(acting)
    verified = _verified_claims(account, claims)
    if verified is not None:
        claims["verified_claims"] = verified
    return claims


def legal_person_claim(acting: dict[str, Any]) -> dict[str, Any]:
    """The documented ``cn_legal_person`` claim: enterprise, acting person's role, validity."""
    claim: dict[str, Any] = {
        "credit_code": acting["credit_code"],
        "name": acting["enterprise_name"],
        "role": acting["role"],
    }
    if acting.get("authorisation_id"):
        claim["authorisation"] = {
            "id": acting["authorisation_id"],
            "roles": acting.get("roles", []),
            "valid_from": acting.get("valid_from"),
            "valid_until": acting.get("valid_until"),
        }
    return claim
