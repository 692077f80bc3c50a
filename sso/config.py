"""Typed settings: defaults, then a TOML file, then ``SSO_*`` environment variables.

Unknown keys are errors, and every problem is reported at once (model: dex
``cmd/dex/config.go`` ``Validate()``), so an operator fixes a config file in one pass.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit


class ConfigError(Exception):
    """Raised with every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


@dataclass
class Settings:
    # The issuer identifier (OIDC Core §2). Never derived from the Host header.
    issuer: str = "http://127.0.0.1:5000"
    # Folder for the embedded defaults: SQLite file and generated key-encryption key.
    instance_path: str = "instance"
    # SQLAlchemy URL; empty means SQLite under instance_path.
    database_url: str = ""
    # Database connections each process may hold at once; 0: sized by `sso serve
    # --production` from its threads (two per thread, as a request may briefly hold
    # two, plus two for the process's background work), else SQLAlchemy's 5 (+10).
    # When running a WSGI server by hand with T threads, set at least 2 * T + 2.
    database_pool_size: int = 0
    # How long a request waits for a free database connection before a 503 (s).
    database_pool_timeout: int = 10
    # Redis URL for short-lived state; empty means the embedded single-process store.
    redis_url: str = ""
    # Base64url-encoded 32-byte key that encrypts signing keys at rest. Empty: a key
    # file is generated under instance_path (0600) — fine for one machine only.
    key_encryption_key: str = ""
    # Loopback http redirect URIs are allowed only in development.
    development: bool = False
    # Seed a demo account and demo portals on start.
    demo: bool = False
    # Lifetimes, in seconds.
    authorization_code_ttl: int = 60
    access_token_ttl: int = 600
    id_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    session_idle_timeout: int = 1800
    session_absolute_timeout: int = 12 * 3600
    # Back-channel logout: per-attempt timeout (s) and attempts before giving up.
    logout_delivery_timeout: int = 2
    logout_max_attempts: int = 5
    # How often each process delivers pending logouts and ends expired sessions (s).
    background_interval: int = 5
    # How long a rotated-in key is published before it signs (clients cache JWKS).
    key_publish_lead: int = 600
    # How often a process re-reads the key table to pick up rotations from others.
    key_refresh_interval: int = 10
    # How long a process may use a portal's registration without re-reading it (s):
    # the bound on how late a change made by another process (disable, delete,
    # secret rotation, `sso clients ...`) takes effect here. 0: read it every time.
    client_cache_ttl: int = 5
    # How long a process may answer "this grant / access token is not revoked" without
    # asking the database (s): a safety net only, revocations reach every process at
    # once (sso.revocations). 0: ask the database every time.
    revocation_cache_ttl: int = 30
    # Default ID token algorithm; clients may ask for ES256.
    default_signing_alg: str = "RS256"
    # Reverse proxies in front of the gateway whose X-Forwarded-For is trusted for
    # the client address (rate limits, audit). 0: use the socket peer. The Host
    # header is never trusted either way: URLs come from the issuer.
    trusted_proxies: int = 0
    log_level: str = "INFO"
    # Largest accepted request body (bytes); larger requests get a clear 413.
    max_request_bytes: int = 64 * 1024
    # Log lines: "json" (one object per line, for log collectors) or "text".
    log_format: str = "json"
    # Serve Prometheus metrics at /metrics (404 otherwise).
    metrics_enabled: bool = False
    # When set, /metrics requires "Authorization: Bearer <metrics_token>".
    metrics_token: str = ""
    # Identity connectors ([[connectors]] tables; SSO_CONNECTORS as JSON). Empty:
    # the gateway's accounts plus the mock population and enterprise registries.
    connectors: list[dict[str, Any]] = field(default_factory=list)

    # ---- derived values -------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        path = Path(self.instance_path).resolve() / "sso.sqlite3"
        return f"sqlite:///{path}"

    @property
    def longest_signed_token_ttl(self) -> int:
        return max(self.access_token_ttl, self.id_token_ttl)


_SUPPORTED_ALGS = ("RS256", "ES256")


def _coerce(name: str, kind: type, raw: Any, problems: list[str]) -> Any:
    """Turn a raw value (from TOML or the environment) into the field's type."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off", ""):
            return False
    elif kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
    elif kind is str:
        if isinstance(raw, str):
            return raw
    elif getattr(kind, "__origin__", None) is list:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                problems.append(f"{name}: expected a JSON list")
                return None
        if isinstance(raw, list):
            return raw
        problems.append(f"{name}: expected a list, got {type(raw).__name__}")
        return None
    problems.append(f"{name}: expected {getattr(kind, '__name__', kind)}, got {raw!r}")
    return None


def _field_types() -> dict[str, type]:
    hints = get_type_hints(Settings)
    return {f.name: hints[f.name] for f in fields(Settings) }


def load_settings(
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Defaults ← TOML file (``path`` or ``SSO_CONFIG``) ← ``SSO_*`` env ← overrides."""
    env = os.environ if environ is None else environ
    types = _field_types()
    problems: list[str] = []
    values: dict[str, Any] = {}

    config_path = path or env.get("SSO_CONFIG")
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            problems.append(f"config file not found: {config_path}")
            data = {}
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"config file {config_path} is not valid TOML: {exc}")
            data = {}
        for key, raw in data.items():
            if key not in types:
                problems.append(f"unknown key in {config_path}: {key}")
                continue
            values[key] = _coerce(key, types[key], raw, problems)

    for env_key, raw in env.items():
        if not env_key.startswith("SSO_") or env_key == "SSO_CONFIG":
            continue
        key = env_key[4:].lower()
        if key not in types:
            problems.append(f"unknown environment variable: {env_key}")
            continue
        values[key] = _coerce(env_key, types[key], raw, problems)

    for key, raw in (overrides or {}).items():
        if key not in types:
            problems.append(f"unknown setting: {key}")
            continue
        values[key] = _coerce(key, types[key], raw, problems)

    settings = Settings(**{k: v for k, v in values.items() if v is not None})
    problems.extend(validate(settings))
    if problems:
        raise ConfigError(problems)
    return settings


def validate(settings: Settings) -> list[str]:
    """Every problem with an assembled Settings, not just the first."""
    problems: list[str] = []
    parts = urlsplit(settings.issuer)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        problems.append(f"issuer must be an absolute URL: {settings.issuer!r}")
    elif parts.query or parts.fragment:
        # OIDC Discovery §3: the issuer has no query or fragment.
        problems.append("issuer must not have a query or fragment")
    elif parts.scheme == "http" and not settings.development:
        problems.append("issuer must use https outside development")
    if settings.issuer.endswith("/"):
        problems.append("issuer must not end with '/'")
    for name in (
        "authorization_code_ttl",
        "access_token_ttl",
        "id_token_ttl",
        "refresh_token_ttl",
        "session_idle_timeout",
        "session_absolute_timeout",
        "logout_delivery_timeout",
        "logout_max_attempts",
        "background_interval",
        "key_refresh_interval",
        "max_request_bytes",
        "database_pool_timeout",
    ):
        if getattr(settings, name) <= 0:
            problems.append(f"{name} must be positive")
    if not 0 <= settings.database_pool_size <= 1000:
        problems.append("database_pool_size must be between 0 and 1000")
    if not 0 <= settings.trusted_proxies <= 5:
        problems.append("trusted_proxies must be between 0 and 5")
    if settings.key_publish_lead < 0:
        problems.append("key_publish_lead must not be negative")
    if not 0 <= settings.client_cache_ttl <= 60:
        problems.append("client_cache_ttl must be between 0 and 60 seconds")
    if not 0 <= settings.revocation_cache_ttl <= 300:
        problems.append("revocation_cache_ttl must be between 0 and 300 seconds")
    if settings.default_signing_alg not in _SUPPORTED_ALGS:
        problems.append(f"default_signing_alg must be one of {', '.join(_SUPPORTED_ALGS)}")
    if settings.redis_url and urlsplit(settings.redis_url).scheme not in (
        "redis",
        "rediss",
        "unix",
    ):
        problems.append("redis_url must be a redis://, rediss:// or unix:// URL")
    if settings.connectors:
        from .connectors import validate_connector_configs

        problems.extend(validate_connector_configs(settings.connectors, settings.instance_path))
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append("log_level must be DEBUG, INFO, WARNING or ERROR")
    if settings.log_format not in ("json", "text"):
        problems.append("log_format must be json or text")
    if settings.metrics_token and len(settings.metrics_token) < 16:
        problems.append("metrics_token must be at least 16 characters (or empty)")
    return problems


def replace(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)
