"""Identity connectors: the protocol, a registry by type, one connector per file.

Connectors are declared in config::

    [[connectors]]
    type = "population-registry"        # a registered type, or "package.module:Class"
    id = "population"
    name = "全国人口基础信息库"
    settings = { url = "postgresql+psycopg://registry/people" }

A province adds its own connector as a new module plus a config entry: a
``type`` of the form ``package.module:Class`` is imported, and the class only
needs ``from_config(id, name, settings, instance_path)`` and the capability
methods it offers (see ``base.py`` and docs/connectors.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from .base import (
    EnterpriseLookup,
    Identity,
    PasswordConnector,
    PasswordLogin,
    PersonLookup,
    RedirectLogin,
)
from .enterprise import EnterpriseRegistry
from .local import LocalAccounts
from .population import PopulationRegistry

__all__ = [
    "Identity",
    "PasswordConnector",
    "PasswordLogin",
    "PersonLookup",
    "EnterpriseLookup",
    "RedirectLogin",
    "Connectors",
    "CONNECTOR_TYPES",
    "build_connectors",
    "DEFAULT_CONNECTORS",
]

CONNECTOR_TYPES: dict[str, Any] = {
    "accounts": LocalAccounts,
    "population-registry": PopulationRegistry,
    "enterprise-registry": EnterpriseRegistry,
}

DEFAULT_CONNECTORS: list[dict[str, Any]] = [
    {"type": "accounts", "id": "accounts", "name": "统一身份认证账号"},
    {"type": "population-registry", "id": "population", "name": "人口基础信息库（模拟）"},
    {"type": "enterprise-registry", "id": "enterprise", "name": "法人基础信息库（模拟）"},
]


class ConnectorConfigError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def resolve_type(type_name: str) -> Any:
    if type_name in CONNECTOR_TYPES:
        return CONNECTOR_TYPES[type_name]
    if ":" in type_name:
        module_name, _, attr = type_name.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    raise KeyError(type_name)


class Connectors:
    """The configured connectors, by id, and the one serving each capability."""

    def __init__(self, connectors: list[Any]) -> None:
        self._by_id = {c.id: c for c in connectors}
        self.password_login: PasswordLogin | None = next(
            (c for c in connectors if isinstance(c, PasswordLogin)), None
        )
        self.person_registry: PersonLookup | None = next(
            (c for c in connectors if isinstance(c, PersonLookup)), None
        )
        self.enterprise_registry: EnterpriseLookup | None = next(
            (c for c in connectors if isinstance(c, EnterpriseLookup)), None
        )

    @property
    def default(self) -> PasswordLogin:
        assert self.password_login is not None
        return self.password_login

    def get(self, connector_id: str) -> Any | None:
        return self._by_id.get(connector_id)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._by_id.values())


def validate_connector_configs(entries: list[Any], instance_path: str = "") -> list[str]:
    """Every problem with the [[connectors]] entries (reported by config validation)."""
    problems: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"connectors[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} must be a table")
            continue
        unknown = set(entry) - {"type", "id", "name", "settings"}
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("type", "id", "name"):
            if not isinstance(entry.get(key), str) or not entry.get(key):
                problems.append(f"{where}: '{key}' is required")
        if "settings" in entry and not isinstance(entry["settings"], dict):
            problems.append(f"{where}: 'settings' must be a table")
        cid = entry.get("id")
        if isinstance(cid, str):
            if cid in seen:
                problems.append(f"{where}: duplicate id {cid!r}")
            seen.add(cid)
        type_name = entry.get("type")
        if isinstance(type_name, str) and type_name:
            try:
                cls = resolve_type(type_name)
            except (KeyError, ImportError, AttributeError, ValueError):
                known = ", ".join(sorted(CONNECTOR_TYPES))
                problems.append(f"{where}: unknown type {type_name!r} (known: {known}, or module:Class)")
                continue
            if not callable(getattr(cls, "from_config", None)):
                problems.append(f"{where}: {type_name!r} is not a connector class (it has no from_config)")
                continue
            # A connector may check its own settings table, so start-up reports
            # those problems together with every other configuration problem.
            check = getattr(cls, "check_settings", None)
            settings = entry.get("settings", {})
            if callable(check) and isinstance(settings, dict):
                problems.extend(f"{where}: {problem}" for problem in check(settings, instance_path))
    return problems


def build_connectors(settings: Any) -> Connectors:
    entries = settings.connectors or DEFAULT_CONNECTORS
    built = []
    for entry in entries:
        cls = resolve_type(entry["type"])
        built.append(cls.from_config(entry["id"], entry["name"], entry.get("settings", {}), settings.instance_path))
    return Connectors(built)
