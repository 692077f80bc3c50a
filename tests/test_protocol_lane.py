"""Token, introspection, revocation and userinfo served without Flask's request cycle (sso.oidc.lane).

Each well-formed call must skip Flask (no before_request hook runs) and answer
exactly what the Flask view answers for the same call: status, body, the headers
a client reads, the request id, the access line and the metrics.  Odd calls go to
Flask with their body intact.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request_started
from prometheus_client import REGISTRY
from werkzeug.exceptions import BadRequestKeyError, NotFound
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
    outer = app.wsgi_app
    outer = getattr(outer, "app", outer)  # ProxyFix, with trusted_proxies
    lane = outer.wsgi_app  # type: ignore[attr-defined]  # StaticDocuments -> ProtocolLane
    assert isinstance(lane, ProtocolLane)
    return lane


def _through_flask(app: Flask) -> WsgiClient:
    """A client of the WSGI app behind the lane: the Flask views, hooks and error handlers."""
    return WsgiClient(_lane(app).wsgi_app)


def _comparable(response: Any) -> tuple[str, Any, dict[str, str | None]]:
    body = json.loads(response.data)
    if isinstance(body, dict):
        body = {k: (k in FRESH) or v for k, v in body.items()}
    return response.status, body, {name: response.headers.get(name) for name in COMPARED}


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
        (BadRequestKeyError("x"), 400, "invalid_request"),  # HTTP exceptions: Flask's 4xx
        (NotFound(), 404, "not_found"),
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
    assert hits == ["/userinfo"]
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


class _Trickle:
    """A request body that arrives slowly, a few bytes per read (a socket's stream: read only)."""

    def __init__(self, data: bytes, chunk: int, pause: float = 0.0) -> None:
        self.data, self.chunk, self.pause = data, chunk, pause

    def read(self, size: int | None = -1) -> bytes:
        time.sleep(self.pause)
        n = self.chunk if size is None or size < 0 else min(size, self.chunk)
        out, self.data = self.data[:n], self.data[n:]
        return out


def _raw(app: Any, portal: Portal, body: bytes, **environ: Any) -> tuple[int, dict[str, Any]]:
    """One call through the whole WSGI stack with a hand-made environ."""
    seen: list[int] = []
    base = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/token",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "5000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": basic(portal)["Authorization"],
    }
    base.update(environ)
    out = b"".join(app(base, lambda status, headers: seen.append(int(status.split()[0]))))
    return seen[0], json.loads(out)


def test_werkzeug_reads_the_headers_and_body_as_flask_does(app: Flask, portal: Portal, hits: list[str]) -> None:
    body = b"grant_type=client_credentials"
    # Content-Type: Werkzeug strips spaces and tabs only; other white space is another type.
    for odd_type in (
        "application/x-www-form-urlencoded\xa0",
        "\x85application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded\x0b",
    ):
        status, answer = _raw(app, portal, body, CONTENT_TYPE=odd_type)
        assert (status, answer["error"]) == (400, "invalid_request"), odd_type
        assert hits == ["/token"]
        hits.clear()
    assert _raw(app, portal, body, CONTENT_TYPE="Application/X-WWW-Form-URLEncoded ; charset=UTF-8")[0] == 200
    assert hits == []
    # Content-Length: ASCII digits only ("²¹" is digits to str.isdigit, 0 to Werkzeug).
    status, answer = _raw(app, portal, body, CONTENT_LENGTH="\u00b2\u00b9")
    assert (status, answer["error"]) == (400, "invalid_request")
    assert hits == ["/token"]
    hits.clear()
    # A body that arrives a few bytes per read is read whole, as Werkzeug reads it.
    assert _raw(app, portal, body, **{"wsgi.input": _Trickle(body, 8)})[0] == 200
    # A server that terminates the stream itself: the body is read to its end.
    longer = body + b"&scope=openid"
    status, answer = _raw(app, portal, longer, CONTENT_LENGTH=str(len(body)), **{"wsgi.input_terminated": True})
    assert status == 200 and answer["scope"] == "openid"
    assert hits == []


def test_the_size_limit_is_read_per_call(app: Flask, portal: Portal, monkeypatch: Any) -> None:
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 16)
    status, answer = _raw(app, portal, b"grant_type=client_credentials")
    assert (status, answer["error"]) == (413, "request_too_large")


def test_the_access_line_times_the_body_read_too(app: Flask, portal: Portal, monkeypatch: Any) -> None:
    timed: list[float] = []
    real = logs.access

    def recording(endpoint: str, method: str, status: int, rid: str, duration: float) -> None:
        timed.append(duration)
        real(endpoint, method, status, rid, duration)

    monkeypatch.setattr(logs, "access", recording)
    body = b"grant_type=client_credentials"
    assert _raw(app, portal, body, **{"wsgi.input": _Trickle(body, 100, pause=0.2)})[0] == 200
    assert len(timed) == 1 and timed[0] >= 0.2


def test_authlib_answers_reach_the_client_without_a_werkzeug_response(
    app: Flask, client: Any, portal: Portal, tokens: dict[str, Any], monkeypatch: Any
) -> None:
    """The lane takes Authlib's JSON answers as (status line, headers, body): no Response built."""
    from werkzeug.wrappers import Response as WerkzeugResponse

    built: list[int] = []
    real_init = WerkzeugResponse.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(WerkzeugResponse, "__init__", counting)
    issued = WsgiClient(app.wsgi_app).post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal))
    refused = WsgiClient(app.wsgi_app).post("/introspect", data={"token": "x"})  # invalid_client, 401
    active = WsgiClient(app.wsgi_app).post("/introspect", data={"token": tokens["access_token"]}, headers=basic(portal))
    # (the test client wraps each answer in its own response object: one each)
    assert len(built) == 3
    assert issued.status == "200 OK" and int(issued.headers["Content-Length"]) == len(issued.data)
    assert refused.status == "401 UNAUTHORIZED" and refused.headers["WWW-Authenticate"].startswith("Basic")
    assert active.get_json()["active"] is True
