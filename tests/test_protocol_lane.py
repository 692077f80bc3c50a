"""Token, introspection, revocation and userinfo served without Flask's request cycle (sso.oidc.lane).

Each well-formed call must skip Flask (no before_request hook runs) and answer
exactly what the Flask view answers for the same call: status, body, the headers
a client reads, the request id, the access line and the metrics.  Odd calls go to
Flask with their body intact.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request_started
from prometheus_client import REGISTRY
from werkzeug.test import Client as WsgiClient

from sso import logs
from sso.oidc.lane import ProtocolLane
from sso.storage import StoreUnavailable
from tests.conftest import Portal, basic, make_settings, redeem

COMPARED = ("Content-Type", "Cache-Control", "Pragma", "WWW-Authenticate", "X-Content-Type-Options", "Referrer-Policy")
# Values that differ on every call (new tokens, times): compared by presence only.
FRESH = {"access_token", "refresh_token", "id_token", "exp", "iat", "expires_in"}


@pytest.fixture
def hits(app: Flask) -> Iterator[list[str]]:
    """The paths of the requests Flask's request cycle saw (its request_started signal)."""
    seen: list[str] = []

    def _count(sender: Any, **extra: Any) -> None:
        from flask import request

        seen.append(request.path)

    request_started.connect(_count, app)
    yield seen
    request_started.disconnect(_count, app)


def _lane(app: Flask) -> ProtocolLane:
    lane = app.wsgi_app.wsgi_app  # type: ignore[attr-defined]  # StaticDocuments -> ProtocolLane
    assert isinstance(lane, ProtocolLane)
    return lane


def _through_flask(app: Flask) -> WsgiClient:
    """A client of the WSGI app behind the lane: the Flask views, hooks and error handlers."""
    return WsgiClient(_lane(app).wsgi_app)


def _comparable(response: Any) -> tuple[int, Any, dict[str, str | None]]:
    body = json.loads(response.data)
    if isinstance(body, dict):
        body = {k: (k in FRESH) or v for k, v in body.items()}
    return response.status_code, body, {name: response.headers.get(name) for name in COMPARED}


@pytest.fixture
def tokens(browser: Any, client: Any, portal: Portal, account: Any) -> dict[str, Any]:
    code, verifier = browser.code_for(portal)
    return redeem(client, portal, code, verifier).get_json()  # type: ignore[no-any-return]


def _calls(portal: Portal, tokens: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    wrong = Portal(portal.client_id, "not-the-secret")
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    return [
        ("POST", "/token", {"data": {"grant_type": "client_credentials"}, "headers": basic(portal)}),
        ("POST", "/token", {"data": {"grant_type": "client_credentials"}, "headers": basic(wrong)}),
        ("POST", "/token", {"data": {"grant_type": "password", "username": "a"}, "headers": basic(portal)}),
        ("POST", "/token", {"data": {"grant_type": "refresh_token", "refresh_token": "x"}, "headers": basic(portal)}),
        ("POST", "/introspect", {"data": {"token": tokens["access_token"]}, "headers": basic(portal)}),
        ("POST", "/introspect", {"data": {"token": "garbage"}, "headers": basic(portal)}),
        ("POST", "/introspect", {"data": {"token": tokens["access_token"]}}),
        ("GET", "/userinfo", {"headers": bearer}),
        ("POST", "/userinfo", {"data": {"access_token": tokens["access_token"]}}),
        ("POST", "/userinfo", {"data": {"access_token": tokens["access_token"]}, "headers": bearer}),
        ("GET", "/userinfo", {"headers": {"Authorization": "Bearer "}}),
        ("GET", "/userinfo", {}),
        ("GET", "/userinfo", {"headers": {"Authorization": "Bearer not-a-token"}}),
        ("POST", "/revoke", {"data": {"token": "garbage"}, "headers": basic(portal)}),
    ]


def test_well_formed_calls_skip_flask_and_answer_like_the_views(
    app: Flask, client: Any, portal: Portal, tokens: dict[str, Any], hits: list[str]
) -> None:
    flask_client = _through_flask(app)
    for method, path, kwargs in _calls(portal, tokens):
        fast = client.open(path, method=method, **kwargs)
        assert hits == [], (method, path)  # answered before Flask
        slow = flask_client.open(path, method=method, **kwargs)
        assert hits == [path]
        hits.clear()
        assert _comparable(fast) == _comparable(slow), (method, path, kwargs)
        assert int(fast.headers["Content-Length"]) == len(fast.data)
        assert fast.headers["X-Request-Id"] and slow.headers["X-Request-Id"]
    # And the answers are the right ones, not just equal.
    calls = _calls(portal, tokens)
    statuses = [client.open(path, method=method, **kwargs).status_code for method, path, kwargs in calls]
    assert statuses == [200, 401, 400, 400, 200, 200, 401, 200, 200, 400, 400, 401, 401, 200]


def test_odd_calls_go_to_flask_with_their_body(app: Flask, client: Any, portal: Portal, hits: list[str]) -> None:
    form = "application/x-www-form-urlencoded"
    odd: list[tuple[str, dict[str, Any], int, str | None]] = [
        ("/token", {"query_string": {"grant_type": "client_credentials"}}, 400, "invalid_request"),
        ("/token", {"data": "grant_type=client_credentials&grant_type=client_credentials"}, 400, "invalid_request"),
        ("/token", {"data": b"grant_type=client_credentials&x=\xff"}, 400, None),
        ("/token", {"data": "scope=openid"}, 400, "invalid_request"),  # no grant_type
        ("/token", {"data": "grant_type=a", "content_type": "application/json"}, 400, "invalid_request"),
        ("/token", {"data": "grant_type=client_credentials&x=" + "a" * 70_000}, 413, "request_too_large"),
        ("/introspect", {"data": "token=a&token=b"}, 400, "invalid_request"),
    ]
    for path, kwargs, status, error in odd:
        kwargs.setdefault("content_type", form)
        response = client.post(path, headers=basic(portal), **kwargs)
        assert hits == [path], (path, kwargs)
        hits.clear()
        assert response.status_code == status, (path, kwargs, response.data)
        if error is not None:
            assert response.get_json()["error"] == error
    # The repeated parameter is named: Flask parsed the very body the lane had read.
    repeated = client.post("/token", data="grant_type=a&grant_type=b", content_type=form, headers=basic(portal))
    assert "'grant_type' parameter is repeated" in repeated.get_json()["error_description"]
    # Other methods: Flask's 405.
    assert client.put("/token", data="grant_type=client_credentials", content_type=form).status_code == 405


def test_a_chunked_body_goes_to_flask(app: Flask, portal: Portal, hits: list[str]) -> None:
    seen: list[int] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen.append(int(status.split()[0]))

    body = b"grant_type=client_credentials"
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/token",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "5000",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "HTTP_AUTHORIZATION": basic(portal)["Authorization"],
    }
    out = b"".join(app.wsgi_app(environ, start_response))
    assert hits == ["/token"]
    assert seen == [200] and json.loads(out)["token_type"] == "Bearer"


def test_request_id_access_line_and_metrics(app: Flask, client: Any, portal: Portal) -> None:
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    sso_log = __import__("logging").getLogger("sso")
    sso_log.addHandler(handler)
    labels = {"endpoint": "oidc.token", "method": "POST", "status": "401"}
    before = REGISTRY.get_sample_value("sso_http_requests_total", labels) or 0
    try:
        # Malformed Basic credentials: the server logs a line while serving the call.
        response = client.post(
            "/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": "Basic !!!not-base64", "X-Request-Id": "lb-42"},
        )
    finally:
        sso_log.removeHandler(handler)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"
    assert response.headers["X-Request-Id"] == "lb-42"
    assert REGISTRY.get_sample_value("sso_http_requests_total", labels) == before + 1
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "sso.access"]
    assert access and access[-1]["message"] == "POST oidc.token 401"
    assert {line["request_id"] for line in lines} == {"lb-42"}, lines  # every line of the call
    assert all(line["endpoint"] == "oidc.token" for line in lines)
    assert "not-base64" not in stream.getvalue()


@pytest.mark.parametrize(
    ("failure", "status", "error"),
    [
        (StoreUnavailable("redis down"), 503, "temporarily_unavailable"),
        (RuntimeError("bug with a secret s3cr3t"), 500, "server_error"),
    ],
)
def test_failures_are_the_error_handlers_answers(
    app: Flask,
    client: Any,
    portal: Portal,
    tokens: dict[str, Any],
    monkeypatch: Any,
    hits: list[str],
    failure: Exception,
    status: int,
    error: str,
) -> None:
    def broken(token: str) -> Any:
        raise failure

    monkeypatch.setattr("sso.oidc.views.check_access_token", broken)
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    fast = client.get("/userinfo", headers=bearer)
    assert hits == []
    slow = _through_flask(app).get("/userinfo", headers=bearer)
    assert _comparable(fast) == _comparable(slow)
    assert fast.status_code == status and fast.get_json()["error"] == error
    assert b"s3cr3t" not in fast.data and b"Traceback" not in fast.data
    assert fast.headers["Cache-Control"] == "no-store" and fast.headers["X-Request-Id"]


def test_the_lane_sees_the_address_behind_a_trusted_proxy(tmp_path: Any, monkeypatch: Any) -> None:
    from sso import create_app
    from sso.bootstrap import prepare

    application = create_app(make_settings(tmp_path, trusted_proxies=1))
    prepare(application)
    seen: list[str | None] = []

    def recording(token: str) -> None:
        seen.append(logs.client_address())

    monkeypatch.setattr("sso.oidc.views.check_access_token", recording)
    client = application.test_client()
    response = client.get(
        "/userinfo",
        headers={"Authorization": "Bearer x", "X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert response.status_code == 401
    assert seen == ["203.0.113.9"]
    assert logs.client_address() is None  # nothing left behind after the call


def test_a_database_that_dies_during_the_rollback_is_still_a_503(
    app: Flask, client: Any, tokens: dict[str, Any], monkeypatch: Any, hits: list[str]
) -> None:
    """The error handler's rollback fails too on a dead connection: the client gets the 503, not a 500."""
    from sqlalchemy.exc import OperationalError

    from sso.db import db

    def cut(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection unexpectedly"))

    monkeypatch.setattr("sso.oidc.views.check_access_token", cut)
    monkeypatch.setattr(type(db.session()), "rollback", cut)
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    for answer in (client.get("/userinfo", headers=bearer), _through_flask(app).get("/userinfo", headers=bearer)):
        assert answer.status_code == 503, answer.data
        assert answer.get_json()["error"] == "temporarily_unavailable"
    assert hits == ["/userinfo"]  # the first call was the lane's, the second Flask's


def test_audit_rows_of_lane_calls_name_the_client_address(tmp_path: Any) -> None:
    """A revocation served by the lane is audited with the caller's address (behind a trusted proxy)."""
    from sso import create_app
    from sso.bootstrap import prepare
    from sso.clients import create_client
    from sso.db import db
    from sso.models import AuditEvent

    application = create_app(make_settings(tmp_path, trusted_proxies=1))
    prepare(application)
    with application.app_context():
        reg = create_client(
            name="Tax", client_id="tax", redirect_uris=["https://t.example/cb"], grant_types=["client_credentials"]
        )
        portal = Portal(reg.client.client_id, reg.client_secret)
    client = application.test_client()
    proxied = {"X-Forwarded-For": "203.0.113.7", **basic(portal)}
    issued = client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=proxied, environ_base={"REMOTE_ADDR": "10.0.0.2"}
    )
    assert issued.status_code == 200
    revoked = client.post(
        "/revoke",
        data={"token": issued.get_json()["access_token"]},
        headers=proxied,
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert revoked.status_code == 200
    with application.app_context():
        row = (
            db.session.execute(
                db.select(AuditEvent).where(AuditEvent.event == "token.revoked").order_by(AuditEvent.id.desc())
            )
            .scalars()
            .first()
        )
    assert row is not None and row.ip == "203.0.113.7"
