"""Bad input at the authorization endpoint (GET and POST), /authorize/resume, /login, /consent.

Two shapes of answer, and only two (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6):

* the client or the redirect URI is wrong: an HTML error page, status 400, and
  NEVER a redirect (an unvalidated redirect URI is an open redirector);
* anything found after that: 302 to the registered redirect URI with ``error``,
  ``state`` (byte-exact) and ``iss`` (RFC 9207 §2).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from werkzeug.datastructures import MultiDict

from sso.clients import create_client, update_client
from sso.connectors.local import create_account
from tests.backends import pg_url  # noqa: F401  (fixture)
from tests.bad_input_util import shared_gateway
from tests.conftest import (
    ISSUER,
    PASSWORD,
    REDIRECT,
    USERNAME,
    Browser,
    IsolatedClient,
    csrf_from,
    interaction_from,
    make_settings,
    pkce_pair,
)

# Every redirect case sends this state: it must come back byte for byte.
STATE = "st-ü 你好 &=+%#/?;\x00'\"<>"
_, CHALLENGE = pkce_pair()
OMIT = object()  # a table value meaning "leave this parameter out"


def request_params(redirect_uri: str, client_id: str, overrides: dict) -> MultiDict:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid profile",
        "state": STATE,
        "nonce": "n-1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    out: MultiDict = MultiDict()
    for key, value in params.items():
        for one in value if isinstance(value, list) else [value]:
            if one is not OMIT:
                out.add(key, one)
    return out


def send(client, method: str, params: MultiDict):
    if method == "GET":
        return client.get("/authorize", query_string=params)
    return client.post("/authorize", data=params)


def assert_error_page(response, error: str, status: int = 400) -> None:
    assert response.status_code == status, response.text[:500]
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    assert f'<code id="error-code">{error}</code>' in response.text
    assert "Traceback" not in response.text


def assert_error_redirect(response, redirect_uri: str, error: str, state: str | None) -> None:
    assert response.status_code == 302, response.text[:500]
    parts = urlsplit(response.headers["Location"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == redirect_uri
    assert parts.fragment == ""
    params = parse_qs(parts.query, keep_blank_values=True)
    assert all(len(v) == 1 for v in params.values()), params
    assert params["error"] == [error], params
    assert params["iss"] == [ISSUER]
    assert params.get("state") == ([state] if state else None)
    assert "code" not in params


def sign_in(client) -> None:
    """A browser session at the gateway, without any consent for a portal."""
    page = client.get("/login")
    data = {"csrf_token": csrf_from(page.text), "username": USERNAME, "password": PASSWORD}
    assert client.post("/login", data=data).status_code == 302


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    """One gateway for the cases that change nothing (see tests/bad_input_util.py)."""
    with shared_gateway(tmp_path_factory.mktemp("bad-authorize")) as shared:
        yield shared


@pytest.fixture
def anon(gw):
    """A fresh browser of the shared gateway: no cookies, no session."""
    return gw.client()


@pytest.fixture
def cc_only_portal(app):
    """Registered redirect URI, but no authorization_code grant."""
    create_client(
        name="Batch", client_id="batch", redirect_uris=[REDIRECT], grant_types=["client_credentials"]
    )


# ---- before the redirect URI is validated: error page, never a redirect ------------------

MUTATED_REDIRECT_URIS = [
    ("trailing-slash", REDIRECT + "/"),
    ("host-case", "https://PORTAL.example.gov.cn/callback"),
    ("path-case", "https://portal.example.gov.cn/Callback"),
    ("scheme-case", "HTTPS://portal.example.gov.cn/callback"),
    ("dot-dot", "https://portal.example.gov.cn/x/../callback"),
    ("dot-segment", "https://portal.example.gov.cn/./callback"),
    ("userinfo-host-first", "https://portal.example.gov.cn@evil.example/callback"),
    ("userinfo-host-last", "https://evil.example@portal.example.gov.cn/callback"),
    ("backslash-userinfo", "https://portal.example.gov.cn\\@evil.example/callback"),
    ("suffix-domain", "https://portal.example.gov.cn.evil.example/callback"),
    ("trailing-dot-host", "https://portal.example.gov.cn./callback"),
    ("extra-query", REDIRECT + "?next=https://evil.example"),
    ("empty-query", REDIRECT + "?"),
    ("fragment", REDIRECT + "#frag"),
    ("empty-fragment", REDIRECT + "#"),
    ("default-port", "https://portal.example.gov.cn:443/callback"),
    ("other-port", "https://portal.example.gov.cn:8443/callback"),
    ("http", "http://portal.example.gov.cn/callback"),
    ("percent-encoded-char", "https://portal.example.gov.cn/%63allback"),
    ("percent-encoded-slash", "https://portal.example.gov.cn%2Fcallback"),
    ("prefix-extended", REDIRECT + "2"),
    ("path-appended", REDIRECT + "/evil"),
    ("leading-space", " " + REDIRECT),
    ("trailing-newline", REDIRECT + "\n"),
    ("nul-byte", REDIRECT + "\x00"),
    ("non-ascii-path", "https://portal.example.gov.cn/callbäck"),
    ("homoglyph-host", "https://pоrtal.example.gov.cn/callback"),  # Cyrillic "о"
    ("double-quote", REDIRECT + '"'),
    ("javascript", "javascript:alert(1)"),
    ("relative", "/callback"),
    ("protocol-relative", "//evil.example/callback"),
    ("other-clients-uri", "http://127.0.0.1:7000/cb"),
]

PAGE_CASES = [
    *[pytest.param({"redirect_uri": uri}, "invalid_request", id=name) for name, uri in MUTATED_REDIRECT_URIS],
    pytest.param({"redirect_uri": OMIT}, "invalid_request", id="missing-redirect-uri"),
    pytest.param({"redirect_uri": ""}, "invalid_request", id="empty-redirect-uri"),
    pytest.param({"redirect_uri": [REDIRECT, REDIRECT]}, "invalid_request", id="repeated-redirect-uri"),
    pytest.param({"client_id": OMIT}, "invalid_request", id="missing-client-id"),
    pytest.param({"client_id": ""}, "invalid_request", id="empty-client-id"),
    pytest.param({"client_id": ["tax-portal"] * 2}, "invalid_request", id="repeated-client-id"),
    pytest.param({"client_id": "evil-portal"}, "invalid_client", id="unknown-client"),
    pytest.param({"client_id": "TAX-PORTAL"}, "invalid_client", id="client-id-case"),
    pytest.param({"client_id": "tax-portal "}, "invalid_client", id="client-id-trailing-space"),
    pytest.param({"client_id": "tax-portal\x00"}, "invalid_client", id="client-id-nul"),
    pytest.param({"client_id": "税务"}, "invalid_client", id="client-id-non-ascii"),
    pytest.param({"client_id": "x" * 5000}, "invalid_client", id="client-id-5kb"),
    # A repeated state cannot be returned "exactly as received" (RFC 6749 §4.1.2.1).
    pytest.param({"state": ["a", "b"]}, "invalid_request", id="repeated-state"),
    # An unknown client with an unsupported response type: still no redirect.
    pytest.param({"client_id": "evil", "response_type": "token"}, "invalid_client", id="unknown-client-and-token"),
    pytest.param({"redirect_uri": "https://evil.example/cb", "scope": "x"}, "invalid_request", id="bad-uri-and-scope"),
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("overrides, error", PAGE_CASES)
def test_error_before_redirect_uri_validation_is_a_page(anon, method, overrides, error):
    response = send(anon, method, request_params(REDIRECT, "tax-portal", overrides))
    assert_error_page(response, error)


def test_no_parameters_at_all_is_a_page(anon):
    assert_error_page(anon.get("/authorize"), "invalid_request")


def test_disabled_client_is_a_page(client, portal):
    update_client(portal.client_id, enable=False)
    assert_error_page(send(client, "GET", request_params(REDIRECT, "tax-portal", {})), "invalid_client")


FORM = "application/x-www-form-urlencoded"
POST_BODY_CASES = [
    # OIDC Core §3.1.2.1: a POSTed authorization request is a form.
    pytest.param({"json": {"client_id": "tax-portal"}}, 400, "invalid_request", id="json"),
    pytest.param({"data": "client_id=tax-portal", "content_type": "text/plain"}, 400, "invalid_request", id="text"),
    pytest.param({"data": {"x": "1"}, "content_type": "multipart/form-data"}, 400, "invalid_request", id="multipart"),
    pytest.param({"data": b"\xff\xfe", "content_type": ""}, 400, "invalid_request", id="no-content-type"),
    pytest.param({"data": "state=" + "x" * 100_000, "content_type": FORM}, 413, "request_too_large", id="100kb-form"),
    pytest.param({"data": b"x" * 100_000, "content_type": "text/plain"}, 413, "request_too_large", id="100kb-text"),
]


@pytest.mark.parametrize("kwargs, status, error", POST_BODY_CASES)
def test_post_body_that_is_not_a_form_is_a_page(anon, kwargs, status, error):
    assert_error_page(anon.post("/authorize", **kwargs), error, status)


def test_parameter_both_in_query_and_body_is_repeated(anon):
    params = request_params(REDIRECT, "tax-portal", {})
    response = anon.post("/authorize?client_id=tax-portal", data=params)
    assert_error_page(response, "invalid_request")


# ---- after the redirect URI is validated: redirect with error, state and iss -------------

LONG = "x" * 3072  # over the 2 KB per-parameter limit

REDIRECT_CASES = [
    # RFC 6749 §4.1.2.1: a missing parameter is invalid_request; an unknown value of
    # response_type is unsupported_response_type. Only "code" is offered (OAuth 2.1).
    pytest.param({"response_type": OMIT}, "invalid_request", id="missing-response-type"),
    pytest.param({"response_type": ""}, "invalid_request", id="empty-response-type"),
    pytest.param({"response_type": "token"}, "unsupported_response_type", id="token"),
    pytest.param({"response_type": "id_token"}, "unsupported_response_type", id="id-token"),
    pytest.param({"response_type": "code id_token"}, "unsupported_response_type", id="code-id-token"),
    pytest.param({"response_type": "id_token code"}, "unsupported_response_type", id="id-token-code"),
    pytest.param({"response_type": "code token"}, "unsupported_response_type", id="code-token"),
    pytest.param({"response_type": "none"}, "unsupported_response_type", id="none"),
    pytest.param({"response_type": "CODE"}, "unsupported_response_type", id="upper-case"),
    pytest.param({"response_type": "cöde"}, "unsupported_response_type", id="non-ascii"),
    pytest.param({"response_type": "code\x00"}, "unsupported_response_type", id="nul"),
    pytest.param({"response_type": ["code", "code"]}, "invalid_request", id="repeated-response-type"),
    # OIDC Core §3.1.2.1: this is an OpenID provider; without openid there is no request.
    pytest.param({"scope": OMIT}, "invalid_request", id="missing-scope"),
    pytest.param({"scope": ""}, "invalid_request", id="empty-scope"),
    pytest.param({"scope": "profile"}, "invalid_request", id="no-openid-scope"),
    pytest.param({"scope": "OPENID"}, "invalid_request", id="openid-upper-case"),
    pytest.param({"scope": ["openid", "profile"]}, "invalid_request", id="repeated-scope"),
    # Only response_mode=query is offered (discovery: response_modes_supported).
    pytest.param({"response_mode": "fragment"}, "invalid_request", id="response-mode-fragment"),
    pytest.param({"response_mode": "form_post"}, "invalid_request", id="response-mode-form-post"),
    pytest.param({"response_mode": "query.jwt"}, "invalid_request", id="response-mode-jarm"),
    # OIDC Core §6.1, §6.2: request objects are not supported, by their own codes.
    pytest.param({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported", id="request"),
    pytest.param({"request_uri": "https://evil.example/r"}, "request_uri_not_supported", id="request-uri"),
    pytest.param({"request": "x", "request_uri": "urn:x"}, "request_not_supported", id="request-and-request-uri"),
    # OIDC Core §3.1.2.1: max_age is a non-negative integer number of seconds.
    pytest.param({"max_age": "-1"}, "invalid_request", id="max-age-negative"),
    pytest.param({"max_age": "abc"}, "invalid_request", id="max-age-text"),
    pytest.param({"max_age": "1.5"}, "invalid_request", id="max-age-fraction"),
    pytest.param({"max_age": ""}, "invalid_request", id="max-age-empty"),
    pytest.param({"max_age": " 60"}, "invalid_request", id="max-age-space"),
    pytest.param({"max_age": "²"}, "invalid_request", id="max-age-superscript-digit"),
    pytest.param({"max_age": "١٢"}, "invalid_request", id="max-age-arabic-digits"),
    pytest.param({"max_age": "99999999999"}, "invalid_request", id="max-age-11-digits"),
    pytest.param({"max_age": ["60", "0"]}, "invalid_request", id="max-age-repeated"),
    # OIDC Core §3.1.2.1: "none" with any other prompt value is an error.
    pytest.param({"prompt": "none login"}, "invalid_request", id="prompt-none-login"),
    pytest.param({"prompt": "login none"}, "invalid_request", id="prompt-login-none"),
    pytest.param({"prompt": "none consent"}, "invalid_request", id="prompt-none-consent"),
    pytest.param({"prompt": ["none", "login"]}, "invalid_request", id="prompt-repeated"),
    # OIDC Core §3.1.2.6: prompt=none and nobody signed in.
    pytest.param({"prompt": "none"}, "login_required", id="prompt-none-no-session"),
    # Oversized and repeated parameters (RFC 6749 §3.1: never more than once).
    pytest.param({"state": LONG}, "invalid_request", id="state-3kb"),
    pytest.param({"nonce": LONG}, "invalid_request", id="nonce-3kb"),
    pytest.param({LONG: "1"}, "invalid_request", id="parameter-name-3kb"),
    pytest.param({"é" * 3000: "1"}, "invalid_request", id="non-ascii-name-3kb"),
    pytest.param({"nonce": ["a", "b"]}, "invalid_request", id="nonce-repeated"),
    pytest.param({"ui_locales": ["en", "zh"]}, "invalid_request", id="unknown-use-repeated"),
    # PKCE pinned to S256 (RFC 7636 §4.3, RFC 9700 §2.1.1).
    pytest.param({"code_challenge_method": "plain"}, "invalid_request", id="pkce-plain"),
    pytest.param({"code_challenge_method": OMIT}, "invalid_request", id="pkce-missing-method"),
    pytest.param({"code_challenge_method": "s256"}, "invalid_request", id="pkce-method-lower-case"),
    pytest.param({"code_challenge": OMIT}, "invalid_request", id="pkce-method-without-challenge"),
    pytest.param({"code_challenge": "short"}, "invalid_request", id="pkce-challenge-too-short"),
    pytest.param({"code_challenge": "x" * 129}, "invalid_request", id="pkce-challenge-too-long"),
    pytest.param({"code_challenge": "+/=" * 15}, "invalid_request", id="pkce-challenge-bad-chars"),
    pytest.param({"code_challenge": [CHALLENGE, CHALLENGE]}, "invalid_request", id="pkce-challenge-repeated"),
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("overrides, error", REDIRECT_CASES)
def test_error_after_redirect_uri_validation_redirects(anon, method, overrides, error):
    params = request_params(REDIRECT, "tax-portal", overrides)
    response = send(anon, method, params)
    assert_error_redirect(response, REDIRECT, error, params.get("state"))


PUBLIC_CLIENT_CASES = [
    # RFC 9700 §2.1.1: a public client must use PKCE.
    pytest.param({"code_challenge": OMIT, "code_challenge_method": OMIT}, "invalid_request", id="no-pkce"),
    pytest.param({"code_challenge_method": "plain"}, "invalid_request", id="pkce-plain"),
    pytest.param({"code_challenge_method": OMIT}, "invalid_request", id="pkce-missing-method"),
    pytest.param({"response_type": "token"}, "unsupported_response_type", id="implicit"),
]


@pytest.mark.parametrize("overrides, error", PUBLIC_CLIENT_CASES)
def test_public_client_errors_redirect(gw, anon, overrides, error):
    uri = gw.public.redirect_uri
    response = send(anon, "GET", request_params(uri, "mobile-app", overrides))
    assert_error_redirect(response, uri, error, STATE)


def test_client_without_code_grant_is_unauthorized_client(client, cc_only_portal):
    response = send(client, "GET", request_params(REDIRECT, "batch", {}))
    assert_error_redirect(response, REDIRECT, "unauthorized_client", STATE)


SIGNED_IN_CASES = [
    # OIDC Core §3.1.2.6: a session but no consent yet.
    pytest.param({"prompt": "none"}, "consent_required", id="prompt-none-no-consent"),
    pytest.param({"prompt": "none login"}, "invalid_request", id="prompt-none-login"),
    pytest.param({"max_age": "²"}, "invalid_request", id="max-age-superscript-digit"),
    pytest.param({"max_age": "99999999999"}, "invalid_request", id="max-age-11-digits"),
    pytest.param({"max_age": "-0"}, "invalid_request", id="max-age-minus-zero"),
]


@pytest.mark.parametrize("overrides, error", SIGNED_IN_CASES)
def test_errors_with_a_signed_in_session(client, portal, account, overrides, error):
    sign_in(client)
    response = send(client, "GET", request_params(REDIRECT, "tax-portal", overrides))
    assert_error_redirect(response, REDIRECT, error, STATE)


TOLERATED = [
    pytest.param({"nonce": "ü\x00<script>"}, id="odd-nonce"),
    pytest.param({"ui_locales": "xx-\x00"}, id="odd-ui-locales"),
    pytest.param({"prompt": "select_account"}, id="unlisted-prompt"),
    pytest.param({"unknown_parameter": "1"}, id="unknown-parameter"),
    pytest.param({"scope": "openid admin"}, id="unregistered-scope-dropped"),
    pytest.param({"max_age": "0"}, id="max-age-zero"),
]


@pytest.mark.parametrize("overrides", TOLERATED)
def test_odd_but_valid_requests_go_to_login(anon, overrides):
    response = send(anon, "GET", request_params(REDIRECT, "tax-portal", overrides))
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?interaction=")


# ---- the pages behind the authorization endpoint ------------------------------------------

PAGE_PATH_CASES = [
    pytest.param("GET", "/authorize/resume", 400, "invalid_request", id="resume-no-interaction"),
    pytest.param("GET", "/authorize/resume?interaction=nope", 400, "invalid_request", id="resume-unknown"),
    pytest.param("GET", "/authorize/resume?interaction=" + "a" * 65, 400, "invalid_request", id="resume-too-long"),
    pytest.param("GET", "/authorize/resume?interaction=%00%ff", 400, "invalid_request", id="resume-nul"),
    pytest.param("POST", "/authorize/resume", 405, "method_not_allowed", id="resume-post"),
    pytest.param("GET", "/login?interaction=nope", 400, "invalid_request", id="login-unknown-interaction"),
    pytest.param("POST", "/login", 400, "invalid_request", id="login-no-csrf"),
    pytest.param("PUT", "/login", 405, "method_not_allowed", id="login-put"),
    pytest.param("GET", "/consent", 400, "invalid_request", id="consent-no-interaction"),
    pytest.param("GET", "/consent?interaction=%00", 400, "invalid_request", id="consent-nul"),
    pytest.param("POST", "/consent", 400, "invalid_request", id="consent-no-csrf"),
    pytest.param("DELETE", "/consent", 405, "method_not_allowed", id="consent-delete"),
    pytest.param("PUT", "/authorize", 405, "method_not_allowed", id="authorize-put"),
]


@pytest.mark.parametrize("method, path, status, error", PAGE_PATH_CASES)
def test_interaction_pages_refuse_bad_input(anon, method, path, status, error):
    assert_error_page(anon.open(path, method=method), error, status)


def test_login_with_oversized_and_nul_fields_is_refused_without_a_session(client, account):
    page = client.get("/login")
    data = {"csrf_token": csrf_from(page.text), "username": "alice\x00" + "a" * 100, "password": "x"}
    response = client.post("/login", data=data)
    assert response.status_code == 400  # the login page again, with its form error
    assert "sso_session" not in response.headers.get("Set-Cookie", "")


def test_login_with_100kb_body_is_413(anon):
    response = anon.post("/login", data={"username": "x" * 100_000})
    assert_error_page(response, "request_too_large", 413)


def test_consent_with_unknown_decision_is_refused(client, portal, account):
    browser = Browser(client)
    resumed = browser.login(send(client, "GET", request_params(REDIRECT, "tax-portal", {})).headers["Location"])
    consent_url = client.get(resumed.headers["Location"]).headers["Location"]
    assert consent_url.startswith("/consent?interaction=")
    data = {"csrf_token": csrf_from(client.get(consent_url).text), "interaction": interaction_from(consent_url)}
    assert_error_page(client.post("/consent", data={**data, "decision": "maybe"}), "invalid_request")


def test_a_value_the_database_refuses_is_400_not_503(app):
    from sqlalchemy.exc import DataError

    def refuse():
        raise DataError("INSERT ...", {}, ValueError("NUL"))

    app.add_url_rule("/_refuse", view_func=refuse)  # before any request: a probe route
    assert_error_page(app.test_client().get("/_refuse"), "invalid_request")


@pytest.fixture
def pg_app(tmp_path, pg_url):  # noqa: F811
    from sso import create_app
    from sso.bootstrap import prepare
    from sso.db import db

    app = create_app(make_settings(tmp_path, database_url=pg_url))
    app.test_client_class = IsolatedClient
    prepare(app)
    with app.app_context():
        create_account(USERNAME, PASSWORD, "Alice")
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.mark.postgres
def test_nul_byte_on_postgresql_is_a_client_error_not_503(pg_app):
    # PostgreSQL refuses NUL in text (SQLite does not): the answer must still be 4xx.
    client = pg_app.test_client()
    data = {"csrf_token": csrf_from(client.get("/login").text), "username": "al\x00ice", "password": "x"}
    assert_error_page(client.post("/login", data=data), "invalid_request")
    form = {"grant_type": "client_credentials", "client_id": "x\x00", "client_secret": "y"}
    response = client.post("/token", data=form)  # client_secret_post, no header: 400 (RFC 6749 §5.2)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_client"
