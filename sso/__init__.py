"""Unified identity and single sign-on gateway: an OpenID Connect provider.

``create_app(settings)`` loads config, initialises each module and mounts the
enabled features.  Everything a request needs lives on ``app.extensions["sso"]``
(a :class:`Gateway`), so no module keeps global mutable state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from .config import Settings, load_settings


class _FormSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session (Flask-WTF keeps the CSRF secret there), minus the
    per-request set-up: the signing serializer is built once per key, not on every
    request, and a request without the cookie (every protocol call) builds none."""

    def get_signing_serializer(self, app: Flask):  # type: ignore[no-untyped-def]
        key = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        cached = app.extensions.get("sso_session_serializer")
        if cached is None or cached[0] != key:
            cached = (key, super().get_signing_serializer(app))
            app.extensions["sso_session_serializer"] = cached
        return cached[1]

    def open_session(self, app: Flask, request: Any):  # type: ignore[no-untyped-def]
        # No Cookie header at all (every protocol call): not even request.cookies, whose
        # getlist("Cookie") walks the whole WSGI environ, which granian fills with the
        # process's environment.
        if app.secret_key and (
            "HTTP_COOKIE" not in request.environ or not request.cookies.get(self.get_cookie_name(app))
        ):
            return self.session_class()
        return super().open_session(app, request)


class GatewayFlask(Flask):
    session_interface = _FormSessionInterface()

    def ensure_sync(self, func: Any) -> Any:
        # Flask asks, for every hook and view on every request, whether the function is
        # a coroutine (inspect, ~1 us each, a dozen per request); the answer never changes.
        known = self._sync_functions.get(func)
        if known is None:
            known = self._sync_functions[func] = super().ensure_sync(func)
        return known

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_functions: dict[Any, Any] = {}


@dataclass
class Gateway:
    """The per-app services: settings, stores, keys, secret hashing, connectors."""

    settings: Settings
    store: Any
    keys: Any
    secret_hasher: Any
    connectors: Any
    vault: Any = None  # resident identity numbers: sealed + keyed lookup hash
    factor_box: Any = None  # TOTP secrets sealed at rest
    sms: Any = None  # SmsSender: the development outbox unless a gateway is plugged in
    pairwise_key: bytes = b""  # HMAC key for pairwise subject identifiers
    server: Any = None


def create_app(settings: Settings | dict[str, Any] | None = None) -> Flask:
    from . import audit, errors, keys, logout, logs, ops, security
    from . import db as db_module
    from .connectors import build_connectors
    from .crypto import IdNumberVault, SecretBox, SecretHasher, derive_key, load_or_create_kek
    from .sms import OutboxSender
    from .storage import create_store

    if not isinstance(settings, Settings):
        settings = load_settings(overrides=settings or {})

    # No app-level static route: it would shadow the pages blueprint's /static.
    app = GatewayFlask(__name__, static_folder=None)
    # No ping on every checkout: sso.db.check_idle_connections pings only connections
    # that sat idle in the pool (the round trip was one per request, or more).
    engine_options: dict[str, Any] = {"pool_pre_ping": False}
    if settings.resolved_database_url.startswith("postgresql"):
        # A request that finds no free connection within the timeout gets a 503
        # (sso.errors).  Sized for the worst case (sso.server.pool_size_for), no
        # request waits for a connection that another holds while waiting itself.
        engine_options["pool_timeout"] = settings.database_pool_timeout
        if settings.database_pool_size:
            engine_options.update(pool_size=settings.database_pool_size, max_overflow=0)
        # An unreachable database host fails a request in seconds (503), not minutes.
        engine_options["connect_args"] = {"connect_timeout": 5}
        # The connection used last is handed out first: warm on both ends, and in a
        # quiet hour the ones at the bottom sit idle and are pinged before reuse
        # (sso.db.check_idle_connections) or closed by the pool's overflow rules.
        engine_options["pool_use_lifo"] = True
    logging.getLogger("sso").setLevel(settings.log_level.upper())
    kek = load_or_create_kek(settings.key_encryption_key, settings.instance_path)
    app.config.update(
        SECRET_KEY=derive_key(kek, "sso flask secret"),
        SQLALCHEMY_DATABASE_URI=settings.resolved_database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        # Forms are short-lived; CSRF tokens follow the login page's own lifetime.
        WTF_CSRF_TIME_LIMIT=3600,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not settings.development,
        SESSION_COOKIE_NAME="sso_csrf",
        JSON_AS_ASCII=False,
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    db_module.db.init_app(app)
    db_module.close_sessions_quietly(app)
    with app.app_context():
        db_module.check_idle_connections(db_module.db.engine)

    box = SecretBox(kek)
    gateway = Gateway(
        settings=settings,
        store=create_store(settings.redis_url or None),
        keys=keys.KeyManager(
            box,
            retention=settings.longest_signed_token_ttl,
            publish_lead=settings.key_publish_lead,
            refresh=settings.key_refresh_interval,
        ),
        secret_hasher=SecretHasher(kek),
        connectors=build_connectors(settings),
        vault=IdNumberVault(kek),
        factor_box=SecretBox(kek, "sso second-factor sealing"),
        sms=OutboxSender(Path(settings.instance_path) / "sms-outbox.jsonl"),
        pairwise_key=derive_key(kek, "sso pairwise subject"),
    )
    app.extensions["sso"] = gateway
    errors.register_error_handlers(app)
    logs.init_app(app)  # request ids, access lines, request metrics
    ops.init_app(app)  # /healthz, /readyz, /metrics
    security.init_app(app)
    audit.init_app(app)
    logout.init_app(app)  # the background notifier; started by the serving command

    from .oidc import init_app as init_oidc
    from .web import init_app as init_web

    init_oidc(app)
    init_web(app)
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Outermost, so the middleware answering in front of Flask (sso.oidc.static and
        # .lane) sees the client's address too.  Only the address: x_host stays 0 so a
        # forged Host changes nothing.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=0, x_host=0)  # type: ignore[method-assign]
    return app


def gateway_of(app: Flask) -> Gateway:
    return app.extensions["sso"]  # type: ignore[no-any-return]
