"""The connector protocol: small capabilities that return one normalised Identity.

Model: dex ``connector/connector.go``.  A connector implements only the
capabilities it has; the gateway asks ``isinstance(c, PersonLookup)`` and so on.
Connectors never touch Flask or tokens, and opaque connector data stays on the
server (``Identity.connector_data`` is never put in a token or a page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class VerifiedAttribute:
    """One attribute as a source vouches for it (OIDC4IDA: claims + verification)."""

    value: Any
    source: str  # e.g. "population-registry"
    verified_at: datetime


@dataclass(frozen=True)
class Identity:
    """Who signed in or was looked up, as a connector vouches for it."""

    connector_id: str
    subject: str  # stable, connector-scoped identifier
    display_name: str
    principal: str = "natural"  # natural | legal
    assurance: str = "self-asserted"  # self-asserted | registry-verified
    attributes: dict[str, VerifiedAttribute] = field(default_factory=dict)
    connector_data: dict[str, Any] = field(default_factory=dict, repr=False)


# ---- registry records ---------------------------------------------------------------


@dataclass(frozen=True)
class PersonRecord:
    """A natural person in the population registry (GB 11643 number as key)."""

    id_number: str
    name: str
    sex: str
    birth_date: date
    region_code: str
    phone: str | None
    address: str | None
    status: str  # normal | deceased | cancelled

    @property
    def is_normal(self) -> bool:
        return self.status == "normal"


@dataclass(frozen=True)
class EnterpriseRecord:
    """A legal person in the enterprise registry (GB 32100 code as key)."""

    credit_code: str
    name: str
    org_type: str
    region_code: str
    legal_rep_name: str
    legal_rep_id_number: str
    status: str  # active | revoked | cancelled
    registered_on: date

    @property
    def is_active(self) -> bool:
        return self.status == "active"


class RegistryUnavailable(Exception):
    """The registry cannot answer now: callers fail closed with a clear message."""


# ---- capabilities ------------------------------------------------------------------


@runtime_checkable
class PasswordLogin(Protocol):
    id: str
    name: str

    def login(self, username: str, password: str) -> Identity | None:
        """The identity for valid credentials, else None (never says which part was wrong)."""

    def lookup(self, subject: str) -> Identity | None:
        """The identity for a subject issued earlier (refresh, userinfo), else None."""


@runtime_checkable
class RedirectLogin(Protocol):
    """A login at another gateway (callback style), e.g. a neighbouring province."""

    id: str
    name: str

    def login_url(self, callback_url: str, state: str) -> str:
        """Where to send the browser."""

    def handle_callback(self, params: dict[str, str], callback_url: str) -> Identity:
        """The identity from the other gateway's answer; raises on failure."""


@runtime_checkable
class PersonLookup(Protocol):
    id: str
    name: str

    def find_person(self, id_number: str) -> PersonRecord | None:
        """The registry entry for a (validated) resident identity number."""


@runtime_checkable
class EnterpriseLookup(Protocol):
    id: str
    name: str

    def find_enterprise(self, credit_code: str) -> EnterpriseRecord | None:
        """The registry entry for a (validated) unified social credit code."""

    def represented_by(self, id_number: str) -> list[EnterpriseRecord]:
        """Enterprises whose registered legal representative has this number."""


# Old name kept for the login view: the capability it uses.
PasswordConnector = PasswordLogin
