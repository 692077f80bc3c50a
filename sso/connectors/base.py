"""The connector protocol: small capabilities that return one normalised Identity.

Model: dex ``connector/connector.go``.  Connectors never touch Flask or tokens;
opaque connector data stays on the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Identity:
    """Who signed in, as a connector vouches for it."""

    connector_id: str
    subject: str  # stable, connector-scoped identifier (an account id)
    display_name: str
    principal: str = "natural"  # natural | legal
    assurance: str = "self-asserted"
    claims: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class PasswordConnector(Protocol):
    id: str
    name: str

    def login(self, username: str, password: str) -> Identity | None:
        """The identity for valid credentials, else None (never says which part was wrong)."""

    def lookup(self, subject: str) -> Identity | None:
        """The identity for a subject issued earlier (refresh, userinfo), else None."""
