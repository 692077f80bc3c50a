"""Per-request work that does not depend on the request is done once (sso.GatewayFlask)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.sessions import SecureCookieSessionInterface


def test_signing_serializer_is_built_once_per_key(app: Flask, monkeypatch: Any) -> None:
    built: list[int] = []
    real = SecureCookieSessionInterface.get_signing_serializer

    def counting(self: Any, application: Flask) -> Any:
        built.append(1)
        return real(self, application)

    monkeypatch.setattr(SecureCookieSessionInterface, "get_signing_serializer", counting)
    app.extensions.pop("sso_session_serializer", None)
    interface = app.session_interface
    first = interface.get_signing_serializer(app)
    assert interface.get_signing_serializer(app) is first
    assert len(built) == 1
    # A new secret key (or fallback list) gets a new serializer: no stale signatures.
    monkeypatch.setitem(app.config, "SECRET_KEY", b"another key of thirty-two bytes!")
    second = interface.get_signing_serializer(app)
    assert second is not first and len(built) == 2
    assert second.loads(second.dumps({"a": 1})) == {"a": 1}


def test_a_request_without_the_form_cookie_builds_no_serializer(app: Flask, monkeypatch: Any) -> None:
    calls: list[int] = []
    interface = app.session_interface
    real = type(interface).get_signing_serializer

    def counting(self: Any, application: Flask) -> Any:
        calls.append(1)
        return real(self, application)

    monkeypatch.setattr(type(interface), "get_signing_serializer", counting)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert calls == []


def test_csrf_cookie_session_still_round_trips(app: Flask) -> None:
    # The login page stores the CSRF secret in the signed cookie and accepts the form back.
    client = app.test_client()
    page = client.get("/login")
    assert page.status_code == 200
    cookie = client.get_cookie("sso_csrf")
    assert cookie is not None and cookie.value
    opened = app.session_interface.open_session(app, app.request_class({"HTTP_COOKIE": f"sso_csrf={cookie.value}"}))
    assert opened is not None and "csrf_token" in opened


def test_ensure_sync_answer_is_remembered(app: Flask) -> None:
    def view() -> str:
        return "ok"

    assert app.ensure_sync(view) is view
    assert app.ensure_sync(view) is view
    assert app._sync_functions[view] is view  # type: ignore[attr-defined]
