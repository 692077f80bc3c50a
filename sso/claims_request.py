"""The ``claims`` request parameter (OIDC Core §5.5).

A portal may name individual claims and where it wants them (``id_token`` or
``userinfo``), and may make ``acr`` essential with given values.  Release stays
bound to the scopes the person consented to: a claim named here but not covered
by a granted scope is simply not returned (§5.5 lets the OP decline), so the
claims parameter never widens what the consent page showed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_LENGTH = 4096
MEMBERS = ("userinfo", "id_token")


class InvalidClaimsRequest(ValueError):
    pass


@dataclass(frozen=True)
class ClaimsRequest:
    userinfo: dict[str, Any] = field(default_factory=dict)
    id_token: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"userinfo": self.userinfo, "id_token": self.id_token}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ClaimsRequest | None:
        if not data:
            return None
        return cls(dict(data.get("userinfo") or {}), dict(data.get("id_token") or {}))

    def essential_acr_values(self) -> str | None:
        """§5.5.1.1: an essential acr request with values acts like acr_values."""
        acr = self.id_token.get("acr")
        if isinstance(acr, dict) and acr.get("essential"):
            values = acr.get("values") or ([acr["value"]] if "value" in acr else [])
            return " ".join(str(v) for v in values if isinstance(v, str)) or None
        return None


def parse(raw: str | None) -> ClaimsRequest | None:
    """The parsed parameter, None when absent; InvalidClaimsRequest when malformed."""
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_LENGTH:
        raise InvalidClaimsRequest("The 'claims' parameter is too long.")
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidClaimsRequest("The 'claims' parameter is not valid JSON.") from None
    if not isinstance(data, dict):
        raise InvalidClaimsRequest("The 'claims' parameter must be a JSON object.")
    unknown = set(data) - set(MEMBERS)
    if unknown:
        raise InvalidClaimsRequest("The 'claims' parameter may only have 'userinfo' and 'id_token' members.")
    parsed: dict[str, dict[str, Any]] = {}
    for member in MEMBERS:
        value = data.get(member, {})
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise InvalidClaimsRequest(f"'claims.{member}' must be a JSON object.")
        for name, spec in value.items():
            # §5.5.1: each claim is null (default) or an object with essential/value/values.
            if spec is not None and not isinstance(spec, dict):
                raise InvalidClaimsRequest(f"The request for claim '{name}' must be null or an object.")
            if isinstance(spec, dict):
                if "essential" in spec and not isinstance(spec["essential"], bool):
                    raise InvalidClaimsRequest(f"'essential' for claim '{name}' must be true or false.")
                if "values" in spec and not isinstance(spec["values"], list):
                    raise InvalidClaimsRequest(f"'values' for claim '{name}' must be a list.")
        parsed[member] = value
    return ClaimsRequest(parsed["userinfo"], parsed["id_token"])


def for_id_token(request: ClaimsRequest | None, released: dict[str, Any]) -> dict[str, Any]:
    """The released claims the portal asked to find in the ID token itself."""
    if request is None:
        return {}
    protocol = {"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid", "at_hash"}
    return {name: released[name] for name in request.id_token if name in released and name not in protocol}
