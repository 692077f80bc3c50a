"""Identity connectors: the protocol, a registry by type, one connector per file."""

from __future__ import annotations

from ..config import Settings
from .base import Identity, PasswordConnector
from .local import LocalAccounts

__all__ = ["Identity", "PasswordConnector", "Connectors", "build_connectors"]


class Connectors:
    """The configured connectors, by id; ``default`` serves the login form."""

    def __init__(self, connectors: list[PasswordConnector]) -> None:
        self._by_id = {c.id: c for c in connectors}
        self.default = connectors[0]

    def get(self, connector_id: str) -> PasswordConnector | None:
        return self._by_id.get(connector_id)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_id.values())


def build_connectors(settings: Settings) -> Connectors:
    return Connectors([LocalAccounts()])
