"""Harnesses for the connector conformance suite: how the contract drives each connector type.

The contract (``test_conformance.ConnectorContract``) is the same for every
connector; a harness supplies what the contract cannot guess for one type: how
to build it over the fixed demo data (``sso.connectors.demo_data``), which
capabilities it must declare, credentials that work, how to make its backing
service unreachable, and how a user signs in at the other side of a redirect.
A province writes one harness for its own connector (docs/connectors.md).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import astuple, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import text

from sso.connectors.base import EnterpriseLookup, PasswordLogin, PersonLookup, RedirectLogin
from sso.connectors.demo_data import DEMO_CITIZEN, DEMO_ENTERPRISES, DEMO_PEOPLE
from sso.connectors.enterprise import EnterpriseRegistry
from sso.connectors.local import LocalAccounts
from sso.connectors.population import PopulationRegistry
from sso.connectors.sqlregistry import SCHEMA, registry_engine, seed_demo_registry, url_for_path

Capability = type


class Harness:
    """One connector type under the contract.  Subclass it for your own connector."""

    #: The ``type`` of the [[connectors]] entry (used for test ids too).
    type_name: str = ""
    #: Test-id suffix when one type has several harnesses (e.g. two backends).
    variant: str = ""
    #: The capability protocols the connector must declare (checked with isinstance).
    capabilities: tuple[Capability, ...] = ()
    #: Contract tests the connector is known to fail: name -> (exception type, reason).
    #: They run as strict xfails, so a fix turns them into an error until removed here.
    known_gaps: dict[str, tuple[type[BaseException], str]] = {}
    #: Marks for every test of this harness (e.g. pytest.mark.postgres).
    marks: tuple[Any, ...] = ()

    # PasswordLogin: a login name and password the connector accepts.
    username: str = ""
    password: str = ""
    # RedirectLogin: where the gateway wants the browser back.
    callback_url: str = "https://gateway.example.gov.cn/login/callback"

    @property
    def test_id(self) -> str:
        return f"{self.type_name}[{self.variant}]" if self.variant else self.type_name

    def build(self, tmp_path: Path) -> AbstractContextManager[Any]:
        """A context manager yielding the connector, live over the demo data."""
        raise NotImplementedError

    def unreachable(self, tmp_path: Path) -> list[tuple[str, Any]]:
        """(label, connector) pairs whose registry is down: RegistryUnavailable expected."""
        return []

    def sign_in_upstream(self, connector: Any, login_url: str) -> dict[str, str]:
        """Play the user at the other gateway: the query it sends back to the callback."""
        raise NotImplementedError


# ---- the gateway's own accounts ---------------------------------------------------------------

@contextmanager
def _gateway_app(tmp_path: Path) -> Iterator[Any]:
    from sso import create_app
    from sso.bootstrap import prepare
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    seed_demo_registry(url_for_path(str(tmp_path / "instance" / "registry.sqlite3")))
    app = create_app(settings)
    prepare(app)
    with app.app_context():
        yield app


class LocalAccountsHarness(Harness):
    """``accounts`` with a local, self-asserted account (operators, tests)."""

    type_name = "accounts"
    variant = "local"
    capabilities = (PasswordLogin,)
    username, password = "conformance-user", "a long enough passphrase 1"

    @contextmanager
    def build(self, tmp_path: Path) -> Iterator[Any]:
        with _gateway_app(tmp_path) as app:
            self.prepare_account(app)
            yield LocalAccounts.from_config("accounts", "统一身份认证账号", {}, app.instance_path)

    def prepare_account(self, app: Any) -> None:
        from sso.connectors.local import create_account

        create_account(self.username, self.password, "Conformance")


class RegisteredCitizenHarness(LocalAccountsHarness):
    """``accounts`` with 张三, registered through real-name verification (the usual citizen)."""

    variant = "registered-citizen"
    username, password = DEMO_CITIZEN.id_number, "a long enough passphrase 2"

    def prepare_account(self, app: Any) -> None:
        from sso.accounts import register_citizen, verify_real_name

        register_citizen(verify_real_name(DEMO_CITIZEN.name, DEMO_CITIZEN.id_number), self.password, None)


# ---- the mock national registries ---------------------------------------------------------------


def closed_port() -> int:
    """A loopback TCP port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryHarness(Harness):
    cls: type = PopulationRegistry
    name = "注册库（测试）"

    @contextmanager
    def build(self, tmp_path: Path) -> Iterator[Any]:
        url = url_for_path(str(tmp_path / "registry.sqlite3"))
        seed_demo_registry(url)
        yield self.cls.from_config(self.type_name, self.name, {"url": url}, str(tmp_path))

    def unreachable(self, tmp_path: Path) -> list[tuple[str, Any]]:
        missing = url_for_path(str(tmp_path / "no-such-directory" / "registry.sqlite3"))
        # A password in the URL must never reach the error message.
        closed = f"postgresql+psycopg://registry:s3cret-pw@127.0.0.1:{closed_port()}/registry?connect_timeout=3"
        return [
            ("missing-directory", self.cls(self.type_name, self.name, missing)),
            ("closed-postgresql-port", self.cls(self.type_name, self.name, closed)),
        ]


class PostgresRegistryHarness(RegistryHarness):
    """The same registry over a real PostgreSQL database (the production backend)."""

    variant = "postgresql"
    marks = (pytest.mark.postgres,)

    @contextmanager
    def build(self, tmp_path: Path) -> Iterator[Any]:
        with scratch_database() as url:
            # seed_demo_registry's DDL is SQLite-only (WITHOUT ROWID): load the demo rows here.
            with registry_engine(url).begin() as conn:
                for statement in SCHEMA:
                    conn.execute(text(statement.replace(" WITHOUT ROWID", "")))
                for table, rows in (("people", DEMO_PEOPLE), ("enterprises", DEMO_ENTERPRISES)):
                    for row in rows:
                        conn.execute(
                            text(f"INSERT INTO {table} VALUES (:a,:b,:c,:d,:e,:f,:g,:h)"),
                            dict(zip("abcdefgh", astuple(row), strict=True)),
                        )
            try:
                yield self.cls.from_config(self.type_name, self.name, {"url": url}, str(tmp_path))
            finally:
                registry_engine(url).dispose()  # before the database is dropped


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh PostgreSQL database (skipped without a server, failed under CI=true)."""
    import psycopg

    from tests.backends import PG_ADMIN
    from tests.conftest import skip_or_fail

    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        skip_or_fail(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
    name = "sso_conformance_" + secrets.token_hex(6)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{urlsplit(PG_ADMIN).netloc}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class PopulationHarness(RegistryHarness):
    type_name, variant, cls, capabilities = "population-registry", "sqlite", PopulationRegistry, (PersonLookup,)


class EnterpriseHarness(RegistryHarness):
    type_name, variant, cls, capabilities = "enterprise-registry", "sqlite", EnterpriseRegistry, (EnterpriseLookup,)


class PopulationPostgresHarness(PostgresRegistryHarness):
    type_name, cls, capabilities = "population-registry", PopulationRegistry, (PersonLookup,)


class EnterprisePostgresHarness(PostgresRegistryHarness):
    type_name, cls, capabilities = "enterprise-registry", EnterpriseRegistry, (EnterpriseLookup,)


# ---- a neighbouring province's gateway (the example connector) --------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_KEYS: dict[str, RSAKey] = {}


def throwaway_key(kid: str) -> RSAKey:
    """An RSA key per kid per test process (generating one takes ~0.1 s)."""
    if kid not in _KEYS:
        _KEYS[kid] = RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)
    return _KEYS[kid]


@dataclass
class FakeNeighbour:
    """The other province's gateway as a relying party sees it: /authorize and /token on loopback.

    It checks what a real provider checks (client, PKCE S256, single-use codes bound
    to the redirect URI) and signs ID tokens with a throwaway key.  ``user`` is who
    signs in there; ``tamper`` may rewrite the ID token claims; ``signing_key`` may
    be swapped for a key the connector does not know.
    """

    client_id: str = "beijing-gateway"
    client_secret: str = "s3cret: with/odd&chars"
    user: dict[str, Any] = field(
        default_factory=lambda: {
            "sub": "zj-330106-000042",
            "name": "李雷",
            "birthdate": "1992-04-01",
            "acr": "urn:cn:sso:loa:2",
        }
    )
    tamper: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    signing_key: RSAKey = field(default_factory=lambda: throwaway_key("neighbour-2025"))
    published_key: RSAKey = field(default_factory=lambda: throwaway_key("neighbour-2025"))
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def jwks(self) -> dict[str, Any]:
        return KeySet([self.published_key]).as_dict(private=False)

    def settings(self) -> dict[str, Any]:
        """The connector's [connectors.settings] for this upstream."""
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "jwks": self.jwks(),
        }

    @contextmanager
    def running(self) -> Iterator[FakeNeighbour]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()

    # -- the two endpoints, as plain functions of the request --

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        ok = (
            query.get("response_type") == "code"
            and query.get("client_id") == self.client_id
            and query.get("code_challenge_method") == "S256"
            and len(query.get("code_challenge", "")) == 43
            and query.get("nonce")
            and "openid" in query.get("scope", "").split()
            and query.get("redirect_uri", "").startswith("https://")
        )
        if not ok:
            return 400, {}, b"bad authorization request"
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "redirect_uri": query["redirect_uri"],
            "challenge": query["code_challenge"],
            "nonce": query["nonce"],
            "user": dict(self.user),
        }
        back = {"code": code, "state": query.get("state", ""), "iss": self.issuer}  # RFC 9207
        return 302, {"Location": query["redirect_uri"] + "?" + urlencode(back)}, b""

    def token(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        self.token_requests.append({"form": form, "authorization": authorization})
        try:
            scheme, _, encoded = authorization.partition(" ")
            cid, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return 401, {"error": "invalid_client"}
        if scheme != "Basic" or (unquote(cid), unquote(secret)) != (self.client_id, self.client_secret):
            return 401, {"error": "invalid_client"}
        grant = self.codes.pop(form.get("code", ""), None)  # single use
        verifier = form.get("code_verifier", "")
        if (
            grant is None
            or form.get("grant_type") != "authorization_code"
            or form.get("redirect_uri") != grant["redirect_uri"]
            or b64url(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]  # RFC 7636 §4.6
        ):
            return 400, {"error": "invalid_grant"}
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "auth_time": now - 5,
            "nonce": grant["nonce"],
            "sid": "zj-session-1",
            **grant["user"],
        }
        if self.tamper is not None:
            claims = self.tamper(claims)
        header = {"alg": "RS256", "kid": self.signing_key.kid}
        id_token = jwt.encode(header, claims, self.signing_key)
        return 200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "id_token": id_token}


def _handler_for(upstream: FakeNeighbour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/authorize":
                return self._send(404, {}, b"")
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            self._send(*upstream.authorize(query))

        def do_POST(self) -> None:
            if self.path != "/token":
                return self._send(404, {}, b"")
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            status, answer = upstream.token(form, self.headers.get("Authorization", ""))
            self._send(status, {"Content-Type": "application/json"}, json.dumps(answer).encode())

    return Handler


def follow_to_callback(login_url: str, callback_url: str) -> dict[str, str]:
    """GET the login URL like a browser would and return the query sent to the callback."""
    parts = urlsplit(login_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        response = conn.getresponse()
        response.read()
        location = response.getheader("Location") or ""
    finally:
        conn.close()
    assert response.status == 302 and location.startswith(callback_url + "?"), (response.status, location)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class NeighbourGatewayHarness(Harness):
    type_name = "examples.connectors.neighbour_gateway:NeighbourGateway"
    variant = "neighbour-gateway"
    capabilities = (RedirectLogin,)
    callback_url = "https://gateway.example.gov.cn/login/neighbour-zj/callback"

    @property
    def test_id(self) -> str:
        return "neighbour-gateway"

    @contextmanager
    def build(self, tmp_path: Path) -> Iterator[Any]:
        from examples.connectors.neighbour_gateway import NeighbourGateway

        with FakeNeighbour().running() as upstream:
            yield NeighbourGateway.from_config("neighbour-zj", "浙江政务服务网", upstream.settings(), str(tmp_path))

    def sign_in_upstream(self, connector: Any, login_url: str) -> dict[str, str]:
        return follow_to_callback(login_url, self.callback_url)


SHIPPED: tuple[Harness, ...] = (
    LocalAccountsHarness(),
    RegisteredCitizenHarness(),
    PopulationHarness(),
    PopulationPostgresHarness(),
    EnterpriseHarness(),
    EnterprisePostgresHarness(),
    NeighbourGatewayHarness(),
)
