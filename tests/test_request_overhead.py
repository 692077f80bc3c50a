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


def test_gateway_request_sets_what_oauth2request_sets(app: Flask) -> None:
    # GatewayRequest skips OAuth2Request.__init__ (its per-request URI parse for the
    # transport check): if Authlib starts setting a new attribute there, set it too.
    import inspect
    import re

    from authlib.oauth2.rfc6749 import OAuth2Request
    from werkzeug.datastructures import MultiDict

    from sso.oidc.requests import GatewayRequest

    names = set(re.findall(r"self\.(\w+)\s*=", inspect.getsource(OAuth2Request.__init__)))
    assert names >= {"uri", "method", "headers", "client"}
    made = GatewayRequest("POST", "/token", MultiDict(), MultiDict({"grant_type": "x"}), {})
    assert all(hasattr(made, name) for name in names), names - set(vars(made))
    assert made.uri == app.extensions["sso"].settings.issuer + "/token"
    assert made.payload.grant_type == "x"


def test_gateway_request_builds_its_url_and_parameter_lists_once_and_only_when_asked(app: Flask) -> None:
    from werkzeug.datastructures import MultiDict

    from sso.oidc.requests import GatewayRequest

    made = GatewayRequest(
        "GET", "/authorize", MultiDict([("scope", "openid"), ("x", "1"), ("x", "2")]), MultiDict(), {}
    )
    assert "uri" not in vars(made)  # not built by the constructor
    assert made.uri == app.extensions["sso"].settings.issuer + "/authorize?scope=openid&x=1&x=2"
    lists = made.payload.datalist
    assert lists == {"scope": ["openid"], "x": ["1", "2"]}
    assert made.payload.datalist is lists  # the same lists on every use


def test_insecure_issuer_is_still_refused(app: Flask, monkeypatch: Any) -> None:
    from authlib.oauth2.rfc6749.errors import InsecureTransportError
    from werkzeug.datastructures import MultiDict

    from sso.oidc.requests import GatewayRequest

    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    monkeypatch.setattr(app.extensions["sso"].settings, "issuer", "http://gateway.example.gov.cn")
    try:
        GatewayRequest("GET", "/authorize", MultiDict(), MultiDict(), {})
    except InsecureTransportError:
        pass
    else:
        raise AssertionError("an http issuer off loopback must be refused as Authlib does")


def test_token_responses_carry_each_json_header_once(client: Any, portal: Any) -> None:
    from tests.conftest import basic

    for data in ({"grant_type": "client_credentials"}, {"grant_type": "password"}):
        response = client.post("/token", data=data, headers=basic(portal))
        assert response.status_code == (200 if data["grant_type"] == "client_credentials" else 400)
        expected = (("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache"))
        for name, value in expected:
            assert response.headers.getlist(name) == [value], name
