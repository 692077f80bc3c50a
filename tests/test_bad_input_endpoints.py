"""Bad input at the API endpoints (/token, /introspect, /revoke, /userinfo), /logout,
discovery, JWKS, unknown paths and wrong methods; and a seeded random sweep.

API errors are JSON ``{"error", "error_description"}`` with ``Cache-Control: no-store``
(RFC 6749 §5.2); a failed Basic authentication is 401 with a ``WWW-Authenticate``
challenge.  Nothing ever answers 500 or shows a stack trace.
"""

from __future__ import annotations

import base64
import random
from urllib.parse import quote_from_bytes

import pytest

from tests.bad_input_util import ASSERTION_TYPE, BYE, shared_gateway
from tests.conftest import REDIRECT, Browser, basic, pkce_pair, redeem


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with shared_gateway(tmp_path_factory.mktemp("bad-input")) as shared:
        yield shared


@pytest.fixture
def api(gw):
    """A fresh client, no cookies."""
    return gw.client()


def assert_json_error(response, status: int, error: str) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str) and body["error_description"].isascii()
    if error == "invalid_client" and status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
    return body


def basic_raw(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def token_value(gw, kind: str) -> str:
    if kind in gw.tokens:
        return gw.tokens[kind]
    return gw.forge(kind, gw.tokens["access-token"])


# ---- /token, /introspect, /revoke: body and client authentication ---------------------------

# The minimal well-formed body of each endpoint, and the parameter to repeat.
BODIES = {
    "/token": ({"grant_type": "client_credentials"}, "grant_type"),
    "/introspect": ({"token": "x"}, "token"),
    "/revoke": ({"token": "x"}, "token"),
}
API_PATHS = list(BODIES)

FORM = "application/x-www-form-urlencoded"
BOTH = {"grant_type": "client_credentials", "token": "x"}  # good for any of the three
RAW = "grant_type=client_credentials&token=x"
BODY_CASES = [
    # RFC 6749 §3.2, RFC 7009 §2.1, RFC 7662 §2.1: the body is application/x-www-form-urlencoded.
    pytest.param({"json": BOTH}, 400, "invalid_request", id="json"),
    pytest.param({"data": BOTH, "content_type": "multipart/form-data"}, 400, "invalid_request", id="multipart"),
    pytest.param({"data": RAW, "content_type": "text/plain"}, 400, "invalid_request", id="text"),
    pytest.param({"data": RAW.encode(), "content_type": ""}, 400, "invalid_request", id="untyped"),
    pytest.param({}, 400, "invalid_request", id="no-body"),
    pytest.param({"data": "token=" + "x" * 100_000, "content_type": FORM}, 413, "request_too_large", id="100kb-form"),
    pytest.param({"data": b"[" * 100_000, "content_type": "text/json"}, 413, "request_too_large", id="100kb-json"),
]


@pytest.mark.parametrize("path", API_PATHS)
@pytest.mark.parametrize("kwargs, status, error", BODY_CASES)
def test_body_must_be_a_small_form(gw, api, path, kwargs, status, error):
    assert_json_error(api.post(path, headers=basic(gw.portal), **kwargs), status, error)


@pytest.mark.parametrize("path", API_PATHS)
def test_repeated_parameter_is_invalid_request(gw, api, path):
    form, key = BODIES[path]
    # RFC 6749 §3.1, §3.2: parameters MUST NOT be included more than once.
    response = api.post(path, data={**form, key: [form[key], form[key]]}, headers=basic(gw.portal))
    assert_json_error(response, 400, "invalid_request")
    response = api.post(f"{path}?{key}={form[key]}", data=form, headers=basic(gw.portal))
    assert_json_error(response, 400, "invalid_request")


CLIENT_AUTH_CASES = [
    # RFC 6749 §5.2: invalid_client; 401 with a challenge since Basic is accepted here.
    pytest.param({}, {}, 401, "invalid_client", id="no-credentials"),
    pytest.param({"Authorization": "Basic !!!not-base64!!!"}, {}, 401, "invalid_client", id="not-base64"),
    pytest.param({"Authorization": "Basic"}, {}, 401, "invalid_client", id="basic-without-value"),
    pytest.param(basic_raw(b"tax-portal"), {}, 401, "invalid_client", id="no-colon"),
    pytest.param(basic_raw(b"tax-portal:"), {}, 401, "invalid_client", id="empty-secret"),
    pytest.param(basic_raw(b":"), {}, 401, "invalid_client", id="only-colon"),
    pytest.param(basic_raw(b"nobody:secret"), {}, 401, "invalid_client", id="unknown-client"),
    pytest.param(basic_raw(b"tax-portal:wrong"), {}, 401, "invalid_client", id="wrong-secret"),
    pytest.param(basic_raw(b"\xff\xfe:\xc3\x28"), {}, 401, "invalid_client", id="non-utf8-bytes"),
    pytest.param(basic_raw(b"tax-portal\x00:x"), {}, 401, "invalid_client", id="nul-in-client-id"),
    pytest.param({"Authorization": "Basic ü"}, {}, 401, "invalid_client", id="non-ascii-header"),
    pytest.param({"Authorization": "Bearer abc"}, {}, 401, "invalid_client", id="bearer-scheme"),
    pytest.param({}, {"client_id": "tax-portal", "client_secret": "x"}, 401, "invalid_client", id="post-wrong-secret"),
    pytest.param({}, {"client_assertion_type": "x", "client_assertion": "y"}, 401, "invalid_client", id="odd-jwt"),
    # RFC 6749 §2.3: one authentication method per request.
    pytest.param(basic_raw(b"tax-portal:x"), {"client_secret": "x"}, 400, "invalid_request", id="basic-and-post"),
    pytest.param(basic_raw(b"tax-portal:x"), {"client_assertion": "x"}, 400, "invalid_request", id="basic-and-jwt"),
]


@pytest.mark.parametrize("path", API_PATHS)
@pytest.mark.parametrize("headers, form, status, error", CLIENT_AUTH_CASES)
def test_malformed_client_authentication(api, path, headers, form, status, error):
    response = api.post(path, data={**BODIES[path][0], **form}, headers=headers)
    assert_json_error(response, status, error)


@pytest.mark.parametrize("path", API_PATHS)
def test_client_secret_in_query_string_does_not_authenticate(gw, api, path):
    # RFC 6749 §2.3.1: credentials MUST NOT be sent in the request URI.
    query = f"?client_id=tax-portal&client_secret={gw.portal.secret}"
    assert_json_error(api.post(path + query, data=BODIES[path][0]), 401, "invalid_client")


def test_registered_auth_method_is_enforced(gw, api):
    form = {"grant_type": "client_credentials", "client_id": "tax-portal", "client_secret": gw.portal.secret}
    assert_json_error(api.post("/token", data=form), 401, "invalid_client")


# ---- /token ---------------------------------------------------------------------------------------

URN = "urn:ietf:params:oauth:grant-type:"
CODE = {"grant_type": "authorization_code", "redirect_uri": REDIRECT}
REFRESH = {"grant_type": "refresh_token"}
TOKEN_CASES = [
    # RFC 6749 §5.2: a missing parameter is invalid_request; an unknown grant is
    # unsupported_grant_type; a bad code or refresh token is invalid_grant.
    pytest.param({"scope": "openid"}, 400, "invalid_request", id="missing-grant-type"),
    pytest.param({"grant_type": ""}, 400, "invalid_request", id="empty-grant-type"),
    pytest.param({"grant_type": "password", "username": "alice"}, 400, "unsupported_grant_type", id="password"),
    pytest.param({"grant_type": "implicit"}, 400, "unsupported_grant_type", id="implicit"),
    pytest.param({"grant_type": URN + "jwt-bearer"}, 400, "unsupported_grant_type", id="jwt-bearer"),
    pytest.param({"grant_type": URN + "device_code"}, 400, "unsupported_grant_type", id="device-code"),
    pytest.param({"grant_type": URN + "token-exchange"}, 400, "unsupported_grant_type", id="token-exchange"),
    pytest.param({"grant_type": "CLIENT_CREDENTIALS"}, 400, "unsupported_grant_type", id="upper-case"),
    pytest.param({"grant_type": "client_credentials\x00"}, 400, "unsupported_grant_type", id="nul"),
    pytest.param({"grant_type": "授权码"}, 400, "unsupported_grant_type", id="non-ascii"),
    pytest.param({"grant_type": "x" * 5000}, 400, "unsupported_grant_type", id="5kb"),
    pytest.param(CODE, 400, "invalid_request", id="code-missing"),
    pytest.param({**CODE, "code": "nope"}, 400, "invalid_grant", id="code-unknown"),
    pytest.param({**CODE, "code": "c" * 10_000}, 400, "invalid_grant", id="code-10kb"),
    pytest.param({**CODE, "code": "\x00ü"}, 400, "invalid_grant", id="code-nul"),
    pytest.param(REFRESH, 400, "invalid_request", id="refresh-missing"),
    pytest.param({**REFRESH, "refresh_token": "nope"}, 400, "invalid_grant", id="refresh-unknown"),
    pytest.param({**REFRESH, "refresh_token": "r" * 10_000}, 400, "invalid_grant", id="refresh-10kb"),
]


@pytest.mark.parametrize("form, status, error", TOKEN_CASES)
def test_token_request_errors(gw, api, form, status, error):
    assert_json_error(api.post("/token", data=form, headers=basic(gw.portal)), status, error)


def test_public_client_cannot_use_client_credentials(gw, api):
    form = {"grant_type": "client_credentials", "client_id": "mobile-app"}
    assert_json_error(api.post("/token", data=form), 401, "invalid_client")


@pytest.fixture(scope="module")
def browser(gw):
    """Signed in with consent for tax-portal: every call of code_for() gets a fresh code."""
    return Browser(gw.client())


CODE_CASES = [
    # RFC 7636 §4.6: a verifier that does not match is invalid_grant; a missing or
    # malformed one is invalid_request (§4.1 syntax).
    pytest.param({"code_verifier": pkce_pair()[0]}, "invalid_grant", id="pkce-wrong-verifier"),
    pytest.param({"code_verifier": None}, "invalid_request", id="pkce-missing-verifier"),
    pytest.param({"code_verifier": "short"}, "invalid_request", id="pkce-verifier-too-short"),
    pytest.param({"code_verifier": "v" * 129}, "invalid_request", id="pkce-verifier-too-long"),
    pytest.param({"code_verifier": "ü" * 50}, "invalid_request", id="pkce-verifier-non-ascii"),
    # RFC 6749 §4.1.3: redirect_uri must be identical to the authorization request's.
    pytest.param({"redirect_uri": None}, "invalid_grant", id="redirect-uri-missing"),
    pytest.param({"redirect_uri": REDIRECT + "/"}, "invalid_grant", id="redirect-uri-trailing-slash"),
    pytest.param({"redirect_uri": REDIRECT.upper()}, "invalid_grant", id="redirect-uri-case"),
]


@pytest.mark.parametrize("overrides, error", CODE_CASES)
def test_code_redemption_errors(gw, api, browser, overrides, error):
    code, verifier = browser.code_for(gw.portal)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    form = {k: v for k, v in {**form, **overrides}.items() if v is not None}
    assert_json_error(api.post("/token", data=form, headers=basic(gw.portal)), 400, error)


def test_code_of_another_client_is_invalid_grant(gw, api, browser):
    code, verifier = browser.code_for(gw.portal)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    assert_json_error(api.post("/token", data=form, headers=basic(gw.other)), 400, "invalid_grant")


# ---- private_key_jwt client assertions (RFC 7523 §3) -----------------------------------------

ASSERTION_CASES = [
    "garbage",
    "non-ascii",
    "alg-none",
    "hs256-public-key",  # the registered RSA public key used as an HMAC secret
    "attacker-key",
    "tampered",
    "wrong-issuer",  # iss != sub
    "unknown-client",
    "expired",
    "not-yet-valid",
    "wrong-audience",
    "missing-jti",
    "too-long-lived",
    "sub-not-a-string",
    "non-ascii-alg",
    "json-array-payload",
    "gateway-id-token",
    "gateway-access-token",
]


ASSERTED = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE}


@pytest.mark.parametrize("kind", ASSERTION_CASES)
def test_bad_client_assertion_is_invalid_client(gw, api, kind):
    form = {**ASSERTED, "client_assertion": gw.bad_assertion(kind)}
    # RFC 7523 §3.1: a failed assertion is invalid_client (no Authorization header: 400).
    assert_json_error(api.post("/token", data=form), 400, "invalid_client")


def test_replayed_client_assertion_is_invalid_client(gw, api):
    form = {**ASSERTED, "client_assertion": gw.assertion()}
    assert api.post("/token", data=form).status_code == 200  # the control: a good assertion works
    assert_json_error(api.post("/token", data=form), 400, "invalid_client")


# ---- /userinfo (OIDC Core §5.3, RFC 6750) ------------------------------------------------------

USERINFO_TOKEN_CASES = [
    # RFC 6750 §3.1: a bad token is 401 invalid_token; too little scope is 403.
    *[
        pytest.param(kind, 401, "invalid_token", id=kind)
        for kind in [
            "garbage", "three-garbage-parts", "alg-none", "hs256-public-key", "attacker-key", "tampered",
            "wrong-issuer", "expired", "not-yet-valid", "oversized", "nul", "non-ascii",
            "id-token", "refresh-token", "revoked", "client-credentials",
        ]
    ],
    pytest.param("no-openid-scope", 403, "insufficient_scope", id="no-openid-scope"),
]


@pytest.mark.parametrize("via", ["GET-header", "POST-header", "POST-form"])
@pytest.mark.parametrize("kind, status, error", USERINFO_TOKEN_CASES)
def test_userinfo_refuses_bad_tokens(gw, api, via, kind, status, error):
    token = token_value(gw, kind)
    if via == "POST-form":
        response = api.post("/userinfo", data={"access_token": token})
    else:
        response = api.open("/userinfo", method=via.split("-")[0], headers={"Authorization": "Bearer " + token})
    assert_json_error(response, status, error)
    assert f'error="{error}"' in response.headers["WWW-Authenticate"]


NO_TOKEN = None  # RFC 6750 §3.1: no credentials, so a bare challenge without an error code
USERINFO_REQUEST_CASES = [
    # No bearer credentials at all (another scheme counts as none): 401, bare challenge;
    # the JSON body (the gateway's, RFC 6750 defines none) still says invalid_token.
    pytest.param("GET", {}, {}, 401, NO_TOKEN, id="no-token"),
    pytest.param("GET", {"Authorization": "Basic dGF4LXBvcnRhbDp4"}, {}, 401, NO_TOKEN, id="basic-scheme"),
    pytest.param("GET", {"Authorization": "Token abc"}, {}, 401, NO_TOKEN, id="unknown-scheme"),
    pytest.param("GET", {"Authorization": ""}, {}, 401, NO_TOKEN, id="empty-header"),
    # RFC 6750 §2.3, §5.3: no tokens in URLs (the gateway offers only §2.1 and §2.2), nor JSON or multipart.
    pytest.param("GET", {}, {"query_string": {"access_token": "ACCESS"}}, 401, NO_TOKEN, id="token-in-query"),
    pytest.param("POST", {}, {"json": {"access_token": "ACCESS"}}, 401, NO_TOKEN, id="token-in-json"),
    pytest.param("POST", {}, {"data": {"access_token": "ACCESS"}, "content_type": "multipart/form-data"}, 401,
                 NO_TOKEN, id="token-in-multipart"),
    # RFC 6750 §3.1: a malformed request is 400 invalid_request.
    pytest.param("GET", {"Authorization": "Bearer"}, {}, 400, "invalid_request", id="bearer-without-token"),
    pytest.param("GET", {"Authorization": "Bearer    "}, {}, 400, "invalid_request", id="bearer-blank"),
    pytest.param("POST", {"Authorization": "Bearer ACCESS"}, {"data": {"access_token": "ACCESS"}}, 400,
                 "invalid_request", id="header-and-form"),
    pytest.param("POST", {}, {"data": {"access_token": ["ACCESS"] * 2}}, 400, "invalid_request", id="form-repeated"),
    pytest.param("GET", {"Authorization": "Bearer a b"}, {}, 401, "invalid_token", id="token-with-space"),
]


@pytest.mark.parametrize("method, headers, kwargs, status, error", USERINFO_REQUEST_CASES)
def test_userinfo_request_errors(gw, api, method, headers, kwargs, status, error):
    access = gw.tokens["access-token"]

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value.replace("ACCESS", access) if isinstance(value, str) else value

    response = api.open("/userinfo", method=method, headers=fill(headers), **fill(kwargs))
    assert_json_error(response, status, error or "invalid_token")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge == 'Bearer realm="sso"' if error is NO_TOKEN else f'error="{error}"' in challenge


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"data": {"access_token": "x" * 100_000}}, id="100kb-form"),
        pytest.param({"data": b"x" * 100_000, "content_type": "text/plain", "headers": {"Authorization": "Bearer x"}},
                     id="100kb-text"),
    ],
)
def test_userinfo_refuses_100kb_bodies(api, kwargs):
    assert_json_error(api.post("/userinfo", **kwargs), 413, "request_too_large")


# ---- /introspect (RFC 7662) and /revoke (RFC 7009) ------------------------------------------

BAD_TOKENS = [
    "garbage", "three-garbage-parts", "alg-none", "hs256-public-key", "attacker-key", "tampered",
    "wrong-issuer", "expired", "not-yet-valid", "oversized", "nul", "non-ascii", "id-token", "revoked",
]


@pytest.mark.parametrize("kind", [*BAD_TOKENS, "other-portal"])
def test_introspection_of_a_bad_token_is_inactive_not_an_error(gw, api, kind):
    # RFC 7662 §2.2/§2.3: an invalid token (or another client's) is {"active": false}, 200.
    response = api.post("/introspect", data={"token": token_value(gw, kind)}, headers=basic(gw.portal))
    assert response.status_code == 200 and response.get_json() == {"active": False}
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_revocation_of_a_bad_token_is_200(gw, api, kind):
    # RFC 7009 §2.2: invalid tokens do not cause an error response.
    response = api.post("/revoke", data={"token": token_value(gw, kind)}, headers=basic(gw.portal))
    assert response.status_code == 200, response.text


UNSUPPORTED = "unsupported_token_type"
TOKEN_ENDPOINT_CASES = [
    pytest.param("/introspect", {}, 400, "invalid_request", id="introspect-missing-token"),
    pytest.param("/revoke", {}, 400, "invalid_request", id="revoke-missing-token"),
    # RFC 7009 §2.2.1 code; 400 per RFC 6749 §5.2 (a 401 would need a challenge).
    pytest.param("/introspect", {"token": "x", "token_type_hint": "id_token"}, 400, UNSUPPORTED, id="introspect-hint"),
    pytest.param("/revoke", {"token": "x", "token_type_hint": "id_token"}, 400, UNSUPPORTED, id="revoke-hint"),
    pytest.param("/revoke", {"token": "x", "token_type_hint": "ü\x00"}, 400, UNSUPPORTED, id="revoke-non-ascii-hint"),
    # RFC 7009 §2.1: a client may not revoke another client's token.
    pytest.param("/revoke", {"token": "other-portal"}, 400, "invalid_grant", id="revoke-other-clients-token"),
]


@pytest.mark.parametrize("path, form, status, error", TOKEN_ENDPOINT_CASES)
def test_introspection_and_revocation_errors(gw, api, path, form, status, error):
    form = {k: gw.tokens.get(v, v) for k, v in form.items()}
    assert_json_error(api.post(path, data=form, headers=basic(gw.portal)), status, error)


def test_introspection_needs_a_confidential_client(gw, api):
    response = api.post("/introspect", data={"token": gw.tokens["access-token"], "client_id": "mobile-app"})
    assert_json_error(response, 401, "invalid_client")


# ---- /logout (RP-Initiated Logout 1.0) --------------------------------------------------------

HINT_CASES = [
    "garbage", "three-garbage-parts", "alg-none", "hs256-public-key", "attacker-key", "tampered",
    "wrong-issuer", "oversized", "nul", "non-ascii", "access-token", "refresh-token",
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("kind", HINT_CASES)
def test_bad_id_token_hint_is_a_page_never_a_redirect(gw, api, method, kind):
    hint = gw.tokens[kind] if kind in gw.tokens else gw.forge(kind, gw.tokens["id-token"])
    params = {"id_token_hint": hint, "post_logout_redirect_uri": BYE, "state": "s"}
    kwargs = {"query_string": params} if method == "GET" else {"data": params}
    response = api.open("/logout", method=method, **kwargs)
    # RP-Initiated Logout §4: on an error the OP must not redirect.
    assert response.status_code == 400 and "Location" not in response.headers
    assert '<code id="error-code">invalid_request</code>' in response.text


def test_id_token_hint_for_another_client_id_is_a_page(gw, api):
    params = {"id_token_hint": gw.tokens["id-token"], "client_id": "other-portal", "post_logout_redirect_uri": BYE}
    response = api.get("/logout", query_string=params)
    assert response.status_code == 400 and "Location" not in response.headers
    assert '<code id="error-code">invalid_request</code>' in response.text


def test_expired_id_token_hint_is_still_accepted(gw, api):
    # RP-Initiated Logout §2: an expired ID token is still a good hint (the control case).
    hint = gw.forge("expired", gw.tokens["id-token"])
    response = api.get("/logout", query_string={"id_token_hint": hint, "post_logout_redirect_uri": BYE, "state": "ü"})
    assert response.status_code == 302 and response.headers["Location"] == BYE + "?state=%C3%BC"


@pytest.mark.parametrize(
    "uri",
    [
        BYE + "/", BYE.upper(), BYE + "?x=1", BYE + "#f", "https://portal.example.gov.cn@evil.example/bye",
        "https://portal.example.gov.cn:8443/bye", BYE.replace("https", "http"), "https://portal.example.gov.cn/%62ye",
        REDIRECT, "",
    ],
)
def test_unregistered_post_logout_uri_is_never_followed(gw, api, uri):
    params = {"id_token_hint": gw.tokens["id-token"], "post_logout_redirect_uri": uri}
    response = api.get("/logout", query_string=params)
    assert response.status_code == 200 and "Location" not in response.headers


# ---- discovery, JWKS, unknown paths, wrong methods ------------------------------------------

PATH_CASES = [
    pytest.param("GET", "/nope", 404, "not_found", False, id="unknown-page"),
    pytest.param("GET", "/%00", 404, "not_found", False, id="nul-path"),
    pytest.param("GET", "/static/../../etc/passwd", 404, "not_found", False, id="static-traversal"),
    pytest.param("GET", "/.well-known/nope", 404, "not_found", True, id="unknown-well-known"),
    pytest.param("GET", "/jwks/extra", 404, "not_found", True, id="jwks-subpath"),
    pytest.param("GET", "/token/", 404, "not_found", True, id="token-trailing-slash"),
    pytest.param("GET", "/token", 405, "method_not_allowed", True, id="token-get"),
    pytest.param("PUT", "/token", 405, "method_not_allowed", True, id="token-put"),
    pytest.param("GET", "/introspect", 405, "method_not_allowed", True, id="introspect-get"),
    pytest.param("DELETE", "/revoke", 405, "method_not_allowed", True, id="revoke-delete"),
    pytest.param("PUT", "/userinfo", 405, "method_not_allowed", True, id="userinfo-put"),
    pytest.param("POST", "/jwks", 405, "method_not_allowed", True, id="jwks-post"),
    pytest.param("POST", "/.well-known/openid-configuration", 405, "method_not_allowed", True, id="discovery-post"),
    pytest.param("PATCH", "/logout", 405, "method_not_allowed", False, id="logout-patch"),
    pytest.param("TRACE", "/authorize", 405, "method_not_allowed", False, id="authorize-trace"),
]


@pytest.mark.parametrize("method, path, status, error, is_api", PATH_CASES)
def test_unknown_paths_and_wrong_methods(api, method, path, status, error, is_api):
    response = api.open(path, method=method)
    if is_api:
        assert_json_error(response, status, error)
    else:
        assert response.status_code == status and response.mimetype == "text/html"
        assert f'<code id="error-code">{error}</code>' in response.text
    if status == 405:
        assert response.headers["Allow"]


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/jwks"])
@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"query_string": "x=%00%ff&x=2&"}, id="junk-query"),
        pytest.param({"headers": {"If-None-Match": 'W/"x", "\\", ,,'}}, id="junk-if-none-match"),
        pytest.param({"headers": {"Authorization": "Basic ü", "Cookie": "sso_session=\x00"}}, id="junk-credentials"),
        pytest.param({"data": b"\xff" * 10, "content_type": "application/json"}, id="body-on-get"),
    ],
)
def test_discovery_and_jwks_ignore_junk(api, path, kwargs):
    response = api.get(path, **kwargs)
    assert response.status_code == 200 and response.get_json()


# ---- the sweep -------------------------------------------------------------------------------

AUTHORIZE = [
    ("response_type", "code"), ("client_id", "tax-portal"), ("redirect_uri", REDIRECT), ("scope", "openid profile"),
    ("state", "s"), ("nonce", "n"), ("code_challenge", "CHALLENGE"), ("code_challenge_method", "S256"),
]
BASIC, BEARER = "BASIC", "Bearer ACCESS"
ROUTES = {
    # route: a well-formed request (and its credentials), which the sweep then breaks at random
    ("GET", "/authorize"): (AUTHORIZE, None),
    ("POST", "/authorize"): ([*AUTHORIZE, ("prompt", "none"), ("max_age", "60")], None),
    ("GET", "/authorize/resume"): ([("interaction", "abc")], None),
    ("POST", "/token"): ([("grant_type", "refresh_token"), ("refresh_token", "REFRESH"), ("scope", "openid")], BASIC),
    ("POST", "/introspect"): ([("token", "ACCESS"), ("token_type_hint", "access_token")], BASIC),
    ("POST", "/revoke"): ([("token", "REFRESH"), ("token_type_hint", "refresh_token")], BASIC),
    ("GET", "/userinfo"): ([], BEARER),
    ("POST", "/userinfo"): ([("access_token", "ACCESS")], None),
    ("GET", "/logout"): ([("id_token_hint", "ID"), ("post_logout_redirect_uri", BYE), ("state", "s")], None),
    ("POST", "/logout"): ([("client_id", "tax-portal"), ("post_logout_redirect_uri", BYE)], None),
    ("GET", "/login"): ([("interaction", "abc"), ("lang", "en")], None),
    ("POST", "/login"): ([("username", "alice"), ("password", "x"), ("interaction", "abc")], None),
    ("GET", "/consent"): ([("interaction", "abc")], None),
    ("POST", "/consent"): ([("interaction", "abc"), ("decision", "allow")], None),
    ("GET", "/.well-known/openid-configuration"): ([], None),
    ("GET", "/jwks"): ([], None),
    ("GET", "/"): ([("lang", "en")], None),
}
CONTENT_TYPES = [
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-9",
    "multipart/form-data", "multipart/form-data; boundary=zz", "application/json", "text/plain", "", "\xff/\xfe",
]
HEADERS = ["Authorization", "Cookie", "If-None-Match", "Accept-Language", "Content-Length", "X-Forwarded-Host"]


def random_bytes(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 40))
    if kind == 1:
        return "".join(rng.choice("ü你\x00\n\r%&=+#?;'\"<>\\ .") for _ in range(rng.randrange(1, 12))).encode()
    if kind == 2:
        return b"x" * rng.choice([2049, 3072, 20_000])
    if kind == 3:
        return rng.choice([b"", b"code", b"none", b"none login", b"plain", b"tax-portal", REDIRECT.encode(), b"openid"])
    if kind == 4:
        return rng.choice([b"%", b"%zz", b"%u0000", b"&&==", b"\xc3\x28", b"\xed\xa0\x80", b"a.b.c"])
    return str(rng.randint(-(2**70), 2**70)).encode()


def mutate(rng: random.Random, pairs: list[list[bytes]]) -> bytes:
    """0 to 3 random breakages of a well-formed parameter list, URL-encoded (or not)."""
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        op = rng.randrange(5)
        if op == 0 and pairs:
            pairs.pop(rng.randrange(len(pairs)))
        elif op == 1 and pairs:
            rng.choice(pairs)[1] = random_bytes(rng)
        elif op == 2 and pairs:
            pairs.append(list(rng.choice(pairs)))
        elif op == 3 and pairs:
            rng.choice(pairs)[0] = random_bytes(rng)
        else:
            pairs.append([random_bytes(rng), random_bytes(rng)])
    if rng.random() < 0.1:  # raw, unescaped bytes, as a broken client might send them
        return b"&".join(k + b"=" + v for k, v in pairs)
    return "&".join(quote_from_bytes(k) + "=" + quote_from_bytes(v) for k, v in pairs).encode()


def random_request(rng: random.Random, fill: dict[str, str]) -> tuple[str, str, dict]:
    (method, path), (template, credentials) = rng.choice(list(ROUTES.items()))
    pairs = [[k.encode(), fill.get(v, v).encode()] for k, v in template]
    encoded = mutate(rng, pairs).decode("latin-1")
    if rng.random() < 0.05:
        method = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    headers = {}
    if credentials and rng.random() < 0.8:
        headers["Authorization"] = fill.get(credentials, credentials.replace("ACCESS", fill["ACCESS"]))
    for name in rng.sample(HEADERS, rng.choice([0, 0, 1, 2])):
        value = random_bytes(rng).decode("latin-1").replace("\r", "").replace("\n", "")
        headers[name] = rng.choice(["Basic ", "Bearer ", ""]) + value if name == "Authorization" else value
    kwargs: dict = {"headers": headers}
    if method == "GET" or rng.random() < 0.1:
        kwargs["query_string"] = encoded
    else:
        kwargs["data"] = encoded.encode("latin-1") if rng.random() < 0.9 else rng.randbytes(rng.randrange(0, 300))
        kwargs["content_type"] = CONTENT_TYPES[0] if rng.random() < 0.7 else rng.choice(CONTENT_TYPES)
        if rng.random() < 0.02:
            kwargs["data"] = b"a=" + b"x" * 70_000
    return method, path, kwargs


def test_random_malformed_requests_never_get_a_500(client, portal, public_portal, account):
    # Its own gateway: the sweep revokes and rotates tokens the other cases rely on.
    browser = Browser(client)
    code, verifier = browser.code_for(portal)
    issued = redeem(client, portal, code, verifier).get_json()
    fill = {
        "CHALLENGE": pkce_pair()[1], "ACCESS": issued["access_token"], "REFRESH": issued["refresh_token"],
        "ID": issued["id_token"], BASIC: basic(portal)["Authorization"],
    }
    rng = random.Random(20261130)
    failures, statuses = [], set()
    for i in range(400):
        method, path, kwargs = random_request(rng, fill)
        sender = client if i % 2 else client.application.test_client()  # with and without a session
        response = sender.open(path, method=method, **kwargs)
        body = response.get_data()
        statuses.add(response.status_code)
        if response.status_code >= 500 or b"Traceback" in body:
            failures.append((i, method, path, repr(kwargs)[:300], response.status_code, body[:300]))
    assert not failures, failures[:5]
    assert {200, 302, 400, 401} <= statuses  # the sweep reached past the first checks
