"""End-to-end fixtures: a real ``sso serve`` process and an independent portal.

The gateway runs as a subprocess on a free port, configured only through ``SSO_*``
environment variables, and portals and the account are registered with the ``sso``
CLI.  Nothing here imports the gateway: the tests talk to it over HTTP with Authlib's
client, ``requests`` and PyJWT, as a real portal would.

Two backends: the embedded default (SQLite + in-memory store) and the production one
(PostgreSQL, in a database created for this test session, + Redis).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from subprocess import DEVNULL, STDOUT, Popen
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session

from tests.conftest import skip_or_fail

SSO = Path(sys.executable).with_name("sso")
# Overridable for CI runners whose services live elsewhere.
POSTGRES_URL = os.environ.get("E2E_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/14")
USERNAME, PASSWORD, DISPLAY_NAME = "e2e-user", "e2e correct horse battery", "端到端 Tester"
SCOPE = "openid profile"
TIMEOUT = 15  # seconds, for every HTTP call
Meta = dict[str, Any]  # the discovery document


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- the gateway process ------------------------------------------------------------


@dataclass
class Portal:
    """A client registered with ``sso clients create --json``."""

    registration: dict[str, Any]
    redirect_uri: str
    post_logout_redirect_uri: str

    @property
    def client_id(self) -> str:
        return str(self.registration["client_id"])

    @property
    def client_secret(self) -> str | None:
        return self.registration.get("client_secret")

    @property
    def auth_method(self) -> str:
        return str(self.registration["token_endpoint_auth_method"])


@dataclass
class Gateway:
    issuer: str
    env: dict[str, str]
    log: Path

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    def cli(self, *args: str) -> str:
        command = [str(SSO), *args]
        # stdin closed: a command that unexpectedly prompts fails instead of hanging.
        done = subprocess.run(
            command, env=self.env, stdin=DEVNULL, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"sso {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def register(
        self, name: str, *grant_types: str, public: bool = False, auth_method: str | None = None
    ) -> Portal:
        base = f"http://127.0.0.1:{free_port()}"
        redirect_uri, signed_out = base + "/callback", base + "/signed-out"
        args = ["clients", "create", "--name", name, "--json"]
        for grant in grant_types or ("authorization_code", "refresh_token"):
            args += ["--grant-type", grant]
        if "authorization_code" in args:
            args += ["--redirect-uri", redirect_uri, "--post-logout-redirect-uri", signed_out]
        if public:
            args.append("--public")
        if auth_method:
            args += ["--auth-method", auth_method]
        return Portal(json.loads(self.cli(*args)), redirect_uri, signed_out)


def _clean_env(settings: dict[str, str]) -> dict[str, str]:
    # The developer's own SSO_* variables must not leak into the process under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    env.update(settings, PYTHONUNBUFFERED="1")
    return env


def _wait_until_ready(proc: Popen[bytes], gateway: Gateway, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(gateway.discovery_url, timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


def _stop(proc: Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def start_gateway(instance: Path, backend_env: dict[str, str]) -> tuple[Popen[bytes], Gateway]:
    """Start ``sso serve`` on a free port, retrying if the port was taken meanwhile."""
    for attempt in range(3):
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        settings = {
            "SSO_ISSUER": issuer,
            "SSO_DEVELOPMENT": "true",
            "SSO_INSTANCE_PATH": str(instance),
            "SSO_KEY_PUBLISH_LEAD": "0",
            **backend_env,
        }
        gateway = Gateway(issuer, _clean_env(settings), instance / f"serve-{attempt}.log")
        with gateway.log.open("wb") as log:
            command = [str(SSO), "serve", "--port", str(port)]
            proc = Popen(command, env=gateway.env, stdin=DEVNULL, stdout=log, stderr=STDOUT)
        if _wait_until_ready(proc, gateway, time.monotonic() + 60):
            return proc, gateway
        _stop(proc)
        output = gateway.log.read_text(errors="replace")
        if "Address already in use" not in output:
            pytest.fail(f"the gateway did not start (exit {proc.returncode}):\n{output[-4000:]}")
    pytest.fail("no free port for the gateway after 3 attempts")


# ---- production backends ------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database created for this test session (and dropped after it)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL)
    admin_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"sso_e2e_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        skip_or_fail(f"PostgreSQL unreachable at {admin_url}: {exc}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as admin:
            admin.execute(drop)


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        skip_or_fail(f"Redis unreachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


PRODUCTION = [pytest.mark.postgres, pytest.mark.redis]
BACKENDS = [
    pytest.param("embedded", id="sqlite+memory"),
    pytest.param("production", id="postgres+redis", marks=PRODUCTION),
]


@pytest.fixture(scope="session", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Gateway]:
    """A running gateway with one local account, per backend."""
    backend_env: dict[str, str] = {}
    if request.param == "production":
        backend_env["SSO_REDIS_URL"] = request.getfixturevalue("redis_url")
        backend_env["SSO_DATABASE_URL"] = request.getfixturevalue("postgres_database")
    proc, gw = start_gateway(tmp_path_factory.mktemp(f"gateway-{request.param}"), backend_env)
    try:
        # click.password_option prompts only when --password is absent.
        account = ["--username", USERNAME, "--name", DISPLAY_NAME, "--password", PASSWORD]
        gw.cli("accounts", "create", *account)
        yield gw
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def metadata(gateway: Gateway) -> Meta:
    """The discovery document, fetched with Authlib's client."""
    with OAuth2Session() as session:
        response = session.get(gateway.discovery_url, withhold_token=True, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


# ---- the portal's side -------------------------------------------------------------


def portal_session(meta: Meta, portal: Portal) -> OAuth2Session:
    """Authlib's client for one portal, configured from discovery only."""
    return OAuth2Session(
        client_id=portal.client_id,
        client_secret=portal.client_secret,
        token_endpoint_auth_method=portal.auth_method,
        revocation_endpoint_auth_method=portal.auth_method,
        scope=SCOPE,
        redirect_uri=portal.redirect_uri,
        code_challenge_method="S256",
        token_endpoint=meta["token_endpoint"],
        default_timeout=TIMEOUT,
    )


def token_request(meta: Meta, portal: Portal, data: dict[str, str]) -> requests.Response:
    """A raw token request, authenticated the way the portal is registered."""
    data = dict(data)
    auth = None
    if portal.auth_method == "client_secret_basic":
        auth = (portal.client_id, portal.client_secret)
    else:
        data["client_id"] = portal.client_id
        if portal.auth_method == "client_secret_post":
            data["client_secret"] = str(portal.client_secret)
    return requests.post(meta["token_endpoint"], data=data, auth=auth, timeout=TIMEOUT)


def userinfo(meta: Meta, access_token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(meta["userinfo_endpoint"], headers=headers, timeout=TIMEOUT)


def query_of(url: str) -> dict[str, str]:
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True, strict_parsing=False)
    assert all(len(v) == 1 for v in parsed.values()), f"repeated parameter in {url}"
    return {k: v[0] for k, v in parsed.items()}


def without_query(url: str) -> str:
    return urlsplit(url)._replace(query="", fragment="").geturl()


# ---- independent verification with PyJWT ------------------------------------------


def _verified_claims(meta: Meta, token: str, client_id: str, *required: str) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    assert header.get("kid") and header["alg"] == "RS256", header
    key = jwt.PyJWKClient(meta["jwks_uri"], cache_keys=False).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=client_id,
        issuer=meta["issuer"],
        options={"require": ["iss", "sub", "aud", "exp", "iat", *required]},
    )
    return claims


def verify_id_token(meta: Meta, token: str, *, client_id: str) -> dict[str, Any]:
    assert jwt.get_unverified_header(token).get("typ") in (None, "JWT")  # not an at+jwt
    claims = _verified_claims(meta, token, client_id, "azp")
    assert claims["azp"] == client_id
    return claims


def verify_access_token(meta: Meta, token: str, *, client_id: str) -> dict[str, Any]:
    """RFC 9068: ``typ: at+jwt`` and the required claims, signed by a published key."""
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    claims = _verified_claims(meta, token, client_id, "jti", "client_id", "scope")
    assert claims["client_id"] == client_id and isinstance(claims["scope"], str)
    return claims


# ---- the user's browser --------------------------------------------------------------


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, Any]] = {}
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self._current = a.get("id") or ""
            self.forms[self._current] = {"action": a.get("action") or "", "fields": {}}
        elif tag == "input" and self._current is not None and a.get("name"):
            self.forms[self._current]["fields"][a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse_form(html: str, form_id: str) -> tuple[str, dict[str, str]]:
    parser = _Forms()
    parser.feed(html)
    assert form_id in parser.forms, f"no form#{form_id} in page:\n{html[:2000]}"
    form = parser.forms[form_id]
    return form["action"], form["fields"]


@dataclass
class Browser:
    """A user agent: cookies, no automatic redirects, fills the gateway's forms."""

    issuer: str
    http: requests.Session = field(default_factory=requests.Session)
    submitted: list[str] = field(default_factory=list)

    def get(self, url: str) -> requests.Response:
        return self.http.get(url, allow_redirects=False, timeout=TIMEOUT)

    def submit(self, page: requests.Response, form_id: str, **values: str) -> requests.Response:
        action, fields = parse_form(page.text, form_id)
        assert fields.get("csrf_token"), f"form#{form_id} has no CSRF token"
        assert fields.get("interaction"), f"form#{form_id} has no interaction id"
        self.submitted.append(form_id)
        data = {**fields, **values}
        url = urljoin(page.url, action)
        return self.http.post(url, data=data, allow_redirects=False, timeout=TIMEOUT)

    def authorize(self, url: str, redirect_uri: str) -> str:
        """Follow the gateway through login and consent; return the redirect to the portal."""
        response = self.get(url)
        for _ in range(12):
            assert response.status_code in (302, 303), (response.status_code, response.text[:1000])
            location = urljoin(response.url, response.headers["Location"])
            if without_query(location) == redirect_uri:
                return location
            assert location.startswith(self.issuer + "/"), f"left the gateway for {location}"
            page = self.get(location)
            path = urlsplit(location).path
            if path == "/login" and page.status_code == 200:
                response = self.submit(page, "login-form", username=USERNAME, password=PASSWORD)
            elif path == "/consent" and page.status_code == 200:
                response = self.submit(page, "consent-form", decision="allow")
            else:
                response = page
        raise AssertionError("too many redirects inside the gateway")


def new_pkce_request(oauth: OAuth2Session, meta: Meta, **params: str) -> tuple[str, str, str, str]:
    """(authorization URL, state, code_verifier, nonce) built by Authlib's client."""
    verifier = secrets.token_urlsafe(48)
    nonce = params.pop("nonce", secrets.token_urlsafe(16))
    state = params.pop("state", secrets.token_urlsafe(16))
    url, state = oauth.create_authorization_url(
        meta["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce, **params
    )
    return url, state, verifier, nonce


def sign_in_for_code(meta: Meta, portal: Portal) -> tuple[str, str]:
    """A fresh authorization code for ``portal`` and its PKCE verifier."""
    url, state, verifier, _ = new_pkce_request(portal_session(meta, portal), meta)
    params = query_of(Browser(meta["issuer"]).authorize(url, portal.redirect_uri))
    assert params.get("state") == state and "code" in params, params
    return params["code"], verifier
