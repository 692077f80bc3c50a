"""Discovery and JWKS answered in front of Flask (sso.oidc.static): same answers, no stack."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.test import Client as WsgiClient

from sso import create_app
from sso.bootstrap import prepare

from .conftest import make_settings

PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/jwks")
SAME = ("ETag", "Cache-Control", "Access-Control-Allow-Origin", "X-Content-Type-Options", "Referrer-Policy")


def _flask_hits(app: Flask) -> list[str]:
    hits: list[str] = []

    @app.before_request
    def _count() -> None:
        from flask import request

        hits.append(request.path)

    return hits


def test_plain_get_skips_flask_and_answers_like_the_view(app: Flask, client: Any) -> None:
    hits = _flask_hits(app)
    for path in PATHS:
        fast = client.get(path)
        assert hits == [], path  # answered before Flask
        slow = client.get(path, query_string={"x": "1"})  # a query string: through the Flask view
        assert hits == [path]
        hits.clear()
        assert fast.status_code == slow.status_code == 200
        assert fast.data == slow.data and fast.get_json()
        assert fast.mimetype == slow.mimetype == "application/json"
        assert int(fast.headers["Content-Length"]) == len(fast.data)
        for header in SAME:
            assert fast.headers[header] == slow.headers[header], (path, header)
        assert fast.headers["X-Request-Id"]


def test_head_if_none_match_and_request_id(client: Any) -> None:
    first = client.get("/jwks", headers={"X-Request-Id": "lb-1"})
    assert first.headers["X-Request-Id"] == "lb-1"
    etag = first.headers["ETag"]
    head = client.head("/jwks")
    assert head.status_code == 200 and head.data == b"" and head.headers["ETag"] == etag
    for given in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = client.get("/jwks", headers={"If-None-Match": given})
        assert again.status_code == 304 and again.data == b"", given
        assert again.headers["ETag"] == etag and again.headers["X-Request-Id"]
    for junk in ('"other"', 'W/"x", "\\", ,,', "\x00"):
        assert client.get("/jwks", headers={"If-None-Match": junk}).status_code == 200, junk


def test_other_methods_and_bodies_still_get_flask_answers(client: Any) -> None:
    post = client.post("/jwks")
    assert post.status_code == 405 and post.get_json()["error"] == "method_not_allowed"
    big = client.get("/jwks", data=b"x" * (64 * 1024 + 1), content_type="text/plain")
    assert big.status_code == 413
    assert client.get("/jwks/extra").status_code == 404


def test_a_key_rotated_elsewhere_is_served_after_the_refresh_interval(tmp_path: Any) -> None:
    """The fast path re-reads the key table when due, in an app context of its own."""
    settings = make_settings(tmp_path, key_refresh_interval=1)
    serving, admin = create_app(settings), create_app(settings)
    prepare(serving)
    wsgi = WsgiClient(serving)  # no app context pushed: as under the WSGI server
    before = wsgi.get("/jwks").get_json()
    with admin.app_context():
        new = admin.extensions["sso"].keys.rotate("ES256", activate_in=0)
    serving.extensions["sso"].keys._loaded_at -= 5  # the refresh interval has passed
    after = wsgi.get("/jwks").get_json()
    assert new.kid not in {k["kid"] for k in before["keys"]}
    assert new.kid in {k["kid"] for k in after["keys"]}
