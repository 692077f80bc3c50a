"""Discovery metadata (OIDC Discovery 1.0 §3, RFC 8414): exactly what works, built once."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..assurance import LEVELS
from ..claims import CLAIMS_SUPPORTED, SCOPES, TRUST_FRAMEWORK
from ..config import Settings
from ..keys import SUPPORTED_ALGS
from .grants import TOKEN_AUTH_METHODS


def metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "userinfo_endpoint": issuer + "/userinfo",
        "jwks_uri": issuer + "/jwks",
        "end_session_endpoint": issuer + "/logout",
        "introspection_endpoint": issuer + "/introspect",
        "revocation_endpoint": issuer + "/revoke",
        "scopes_supported": SCOPES,
        "acr_values_supported": [level.acr for level in LEVELS],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["pairwise", "public"],
        "id_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "token_endpoint_auth_methods_supported": TOKEN_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "introspection_endpoint_auth_methods_supported": [m for m in TOKEN_AUTH_METHODS if m != "none"],
        "revocation_endpoint_auth_methods_supported": TOKEN_AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS_SUPPORTED,
        # OpenID Connect for Identity Assurance 1.0 §8
        "verified_claims_supported": True,
        "trust_frameworks_supported": [TRUST_FRAMEWORK],
        "evidence_supported": ["electronic_record"],
        "claims_in_verified_claims_supported": [
            "name",
            "gender",
            "birthdate",
            "address",
            "cn_id_number",
            "cn_id_number_masked",
        ],
        "prompt_values_supported": ["none", "login", "consent"],
        "ui_locales_supported": ["zh-CN", "en"],
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,  # RFC 9207 §3
        # Back-Channel Logout 1.0 §2.1 and Front-Channel Logout 1.0 §3
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": True,
        "frontchannel_logout_session_supported": True,
    }


def document(settings: Settings) -> tuple[bytes, str]:
    """Serialised once at start-up, with a strong ETag."""
    body = json.dumps(metadata(settings), separators=(",", ":"), ensure_ascii=False).encode()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
