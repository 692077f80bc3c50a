"""Assurance levels: authentication strength × identity assurance, as ``acr`` values.

Each level says how the person signed in (password; password and a second factor)
and how well we know who they are (self-asserted; verified against the population
registry).  Levels are ordered; a portal asking for more than the session has gets
a step-up that asks only for what is missing (OIDC Core §3.1.2.1 acr_values).
``amr`` values follow RFC 8176.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Level:
    acr: str
    rank: int
    second_factor: bool
    registry_verified: bool
    description: str


LOW = Level("urn:cn:sso:loa:1", 1, False, False, "password; self-asserted identity")
SUBSTANTIAL = Level("urn:cn:sso:loa:2", 2, False, True, "password; identity verified against the population registry")
HIGH = Level("urn:cn:sso:loa:3", 3, True, True, "password and a second factor; registry-verified identity")

LEVELS = (LOW, SUBSTANTIAL, HIGH)
BY_ACR = {level.acr: level for level in LEVELS}

SECOND_FACTOR_AMR = {"otp", "sms"}  # RFC 8176: one-time password app, SMS code


def has_second_factor(amr: list[str]) -> bool:
    return bool(SECOND_FACTOR_AMR & set(amr))


def current_level(amr: list[str], assurance: str) -> Level:
    verified = assurance == "registry-verified"
    if verified and has_second_factor(amr):
        return HIGH
    return SUBSTANTIAL if verified else LOW


def amr_with_mfa(amr: list[str]) -> list[str]:
    """RFC 8176 §2: "mfa" names the use of more than one factor."""
    out = list(dict.fromkeys(amr))
    if has_second_factor(out) and "pwd" in out and "mfa" not in out:
        out.append("mfa")
    return out


def requested_levels(acr_values: str | None) -> list[Level]:
    """The known levels a request asks for, in the order given (unknown values ignored)."""
    return [BY_ACR[v] for v in (acr_values or "").split() if v in BY_ACR]


def missing_factor(amr: list[str], assurance: str, acr_values: str | None) -> str | None:
    """What a step-up must ask for ("second_factor"), or None when nothing can help.

    acr_values are voluntary (OIDC Core §3.1.2.1): when the best requested level
    needs a registry-verified identity the account lacks, no login can give it,
    so the gateway issues the level it has and reports it truthfully in ``acr``.
    """
    wanted = requested_levels(acr_values)
    if not wanted:
        return None
    have = current_level(amr, assurance)
    if any(level.rank <= have.rank for level in wanted):
        return None
    reachable = [lv for lv in wanted if not (lv.registry_verified and assurance != "registry-verified")]
    if reachable and any(lv.second_factor for lv in reachable) and not has_second_factor(amr):
        return "second_factor"
    return None
