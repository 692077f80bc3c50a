"""The ``sso`` admin CLI, through click's CliRunner, against a gateway in tmp_path.

Each test runs the commands an administrator would, then checks the effect at
the protocol endpoints of an app built from the same settings (same SQLite
file, same key-encryption key), through the Flask test client.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import sqlite3
import stat
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, RSAKey

from sso import create_app
from sso.bootstrap import DEMO_CITIZEN_PASSWORDS, DEMO_USER, prepare
from sso.cli import main
from sso.config import Settings, load_settings
from sso.connectors.demo_data import DEMO_CITIZEN, DEMO_ENTERPRISES, DEMO_PEOPLE
from tests.conftest import PASSWORD, REDIRECT, USERNAME, Browser, Portal, basic, redeem

ISSUER = "http://127.0.0.1:5000"
ROOT = Path(__file__).resolve().parents[1]


# ---- harness ------------------------------------------------------------------------


class Cli:
    """Runs ``sso ...`` with exactly the SSO_* variables given, nothing from os.environ."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runner = CliRunner()

    def __call__(
        self, *args: str, code: int = 0, env: dict[str, str] | None = None, input: str | None = None
    ) -> Result:
        result = self.runner.invoke(main, list(args), env={**self.env, **(env or {})}, input=input)
        if code == 0:
            assert result.exit_code == 0, (result.output, result.exception)
        else:
            # A clean sys.exit with a message, never a traceback.
            assert result.exit_code == code, (result.output, result.exception)
            assert isinstance(result.exception, SystemExit), result.exception
            assert "Traceback" not in result.output
        return result

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self(*args, "--json", **kwargs).stdout)

    def settings(self, **env: str) -> Settings:
        return load_settings(environ={**self.env, **env})

    def app(self) -> Flask:
        """A gateway on the same database and key-encryption key as the commands."""
        application = create_app(self.settings())
        prepare(application)
        return application


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    for key in list(os.environ):
        if key.startswith("SSO_"):
            monkeypatch.delenv(key)
    return Cli(
        {
            "SSO_INSTANCE_PATH": str(tmp_path),
            "SSO_ISSUER": ISSUER,
            "SSO_DEVELOPMENT": "true",
            # These tests change portals through the command (another process) and expect
            # the next request to see it; the cache's staleness bound: test_client_cache.py.
            "SSO_CLIENT_CACHE_TTL": "0",
        }
    )


def create(cli: Cli, *args: str, name: str = "税务服务 Tax portal") -> dict[str, Any]:
    return cli.json("clients", "create", "--name", name, *args)  # type: ignore[no-any-return]


def create_service(cli: Cli, *args: str) -> dict[str, Any]:
    """A confidential portal that may also use client_credentials (easy to test at /token)."""
    return create(
        cli,
        "--redirect-uri",
        REDIRECT,
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "refresh_token",
        "--grant-type",
        "client_credentials",
        *args,
    )


def client_credentials(client: FlaskClient, client_id: str, secret: str) -> Any:
    return client.post(
        "/token",
        data={"grant_type": "client_credentials", "scope": "openid"},
        headers=basic(Portal(client_id, secret)),
    )


def kid_of(token: str) -> str:
    return str(pyjwt.get_unverified_header(token)["kid"])


def verify_with_jwks(client: FlaskClient, token: str) -> dict[str, Any]:
    """PyJWT, independent of the server's code, against the published /jwks."""
    keys = {k["kid"]: k for k in client.get("/jwks").get_json()["keys"]}
    header = pyjwt.get_unverified_header(token)
    key = pyjwt.PyJWK(keys[header["kid"]])
    return pyjwt.decode(  # type: ignore[no-any-return]
        token, key.key, algorithms=[header["alg"]], options={"verify_aud": False}, issuer=ISSUER
    )


def sqlite_bytes(tmp_path: Path) -> bytes:
    # WAL mode: recent writes may still sit in the -wal file, so read every part.
    files = sorted(tmp_path.glob("sso.sqlite3*"))
    assert files, list(tmp_path.iterdir())
    return b"".join(f.read_bytes() for f in files)


def add_user(cli: Cli) -> None:
    """The account conftest's Browser signs in with, created through the CLI."""
    cli("accounts", "create", "--username", USERNAME, "--name", "Alice", "--password", PASSWORD)


def sign_in_and_redeem(client: FlaskClient, portal: Portal) -> dict[str, Any]:
    """Code flow with PKCE S256, sign-in and consent, then the code at /token."""
    code, verifier = Browser(client).code_for(portal)
    response = redeem(client, portal, code, verifier)
    assert response.status_code == 200, response.text
    return response.get_json()  # type: ignore[no-any-return]


# ---- clients create -------------------------------------------------------------------


def test_create_prints_the_secret_once_and_stores_only_an_hmac(cli: Cli, tmp_path: Path) -> None:
    data = create(cli, "--redirect-uri", REDIRECT, "--post-logout-redirect-uri", REDIRECT + "/bye")
    client_id, secret = data["client_id"], data["client_secret"]
    assert client_id.startswith("portal-")
    assert data["redirect_uris"] == [REDIRECT]
    assert data["grant_types"] == ["authorization_code", "refresh_token"]
    assert data["token_endpoint_auth_method"] == "client_secret_basic"
    assert data["public"] is False and data["disabled"] is False
    # At least 256 bits of randomness, URL-safe.
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) >= 32

    # Never shown again.
    shown = cli("clients", "show", client_id, "--json").stdout
    listed = cli("clients", "list", "--json").stdout
    for output in (shown, listed, cli("clients", "show", client_id).stdout):
        assert secret not in output and "hmac" not in output
        assert '"client_secret"' not in output and "client_secret:" not in output

    # Stored only as a keyed hash.
    app = cli.app()
    stored = sqlite_bytes(tmp_path)
    assert secret.encode() not in stored
    assert app.extensions["sso"].secret_hasher.hash(secret).encode() in stored


def test_create_text_output_says_the_secret_is_shown_once(cli: Cli) -> None:
    out = cli("clients", "create", "--name", "Portal", "--redirect-uri", REDIRECT).stdout
    assert "client_id: portal-" in out
    assert "client_secret: " in out
    assert "shown only this once" in out


def test_create_with_chosen_id_and_duplicate(cli: Cli) -> None:
    assert create(cli, "--client-id", "tax-portal", "--redirect-uri", REDIRECT)["client_id"] == "tax-portal"
    result = cli(
        "clients",
        "create",
        "--name",
        "Again",
        "--client-id",
        "tax-portal",
        "--redirect-uri",
        REDIRECT,
        code=2,
    )
    assert "client id tax-portal is already registered" in result.output


def test_public_client_gets_no_secret_and_loopback_http_in_development(cli: Cli) -> None:
    data = create(cli, "--public", "--redirect-uri", "http://127.0.0.1:7000/cb")
    assert data["public"] is True
    assert data["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in data
    # Nothing to rotate.
    result = cli("clients", "rotate-secret", data["client_id"], code=2)
    assert "does not use a client secret" in result.output


def test_id_token_alg_defaults_to_the_configured_algorithm(cli: Cli) -> None:
    assert create(cli, "--redirect-uri", REDIRECT)["id_token_signed_response_alg"] == "RS256"
    es = create(cli, "--redirect-uri", REDIRECT, "--id-token-alg", "ES256")
    assert es["id_token_signed_response_alg"] == "ES256"
    cli.env["SSO_DEFAULT_SIGNING_ALG"] = "ES256"
    assert create(cli, "--redirect-uri", REDIRECT)["id_token_signed_response_alg"] == "ES256"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--redirect-uri", "/callback"], "redirect URI must be absolute: /callback"),
        (["--redirect-uri", "portal.example.gov.cn/cb"], "redirect URI must be absolute"),
        (
            ["--redirect-uri", "https://portal.example.gov.cn/cb#top"],
            "redirect URI must not contain a fragment",
        ),
        (["--redirect-uri", "http://portal.example.gov.cn/cb"], "redirect URI must use https"),
        (
            ["--redirect-uri", "https://user:pw@portal.example.gov.cn/cb"],
            "redirect URI must not contain user information",
        ),
        (
            [
                "--redirect-uri",
                REDIRECT,
                "--post-logout-redirect-uri",
                "http://portal.example.gov.cn/",
            ],
            "post-logout redirect URI must use https",
        ),
        (
            ["--redirect-uri", REDIRECT, "--grant-type", "implicit"],
            "unknown grant type(s): implicit",
        ),
        (
            ["--redirect-uri", REDIRECT, "--grant-type", "password"],
            "choose from authorization_code",
        ),
        (["--redirect-uri", REDIRECT, "--auth-method", "client_secret_jwt"], "unknown auth method"),
        (
            ["--public", "--redirect-uri", REDIRECT, "--grant-type", "client_credentials"],
            "a public client cannot use client_credentials",
        ),
        (
            [
                "--redirect-uri",
                REDIRECT,
                "--auth-method",
                "none",
                "--grant-type",
                "client_credentials",
            ],
            "a public client cannot use client_credentials",
        ),
        (
            ["--public", "--auth-method", "client_secret_basic", "--redirect-uri", REDIRECT],
            "a public client authenticates with 'none'",
        ),
        (
            ["--redirect-uri", REDIRECT, "--auth-method", "private_key_jwt"],
            "private_key_jwt needs the client's public keys (--jwks-file)",
        ),
        ([], "authorization_code needs at least one --redirect-uri"),
        (["--redirect-uri", REDIRECT, "--scope", "profile"], "must include 'openid'"),
        (
            ["--redirect-uri", REDIRECT, "--client-id", "a:b"],
            "client id must be 1 to 64 characters",
        ),
        (
            ["--redirect-uri", REDIRECT, "--client-id", "x" * 65],
            "client id must be 1 to 64 characters",
        ),
        (["--redirect-uri", REDIRECT, "--id-token-alg", "HS256"], "HS256"),
        (
            ["--redirect-uri", REDIRECT, "--sector-identifier", "http://sector.example.gov.cn/uris.json"],
            "sector identifier URI must use https",
        ),
        (["--redirect-uri", REDIRECT, "--sector-identifier", "not a host"], "must be a host name or an https URI"),
        (
            ["--redirect-uri", REDIRECT, "--subject-type", "public", "--sector-identifier", "gov.cn"],
            "a sector identifier applies only to pairwise subjects",
        ),
        (["--redirect-uri", REDIRECT, "--subject-type", "secret"], "pairwise"),
    ],
)
def test_create_rejects_invalid_input(cli: Cli, args: list[str], message: str) -> None:
    result = cli("clients", "create", "--name", "Bad", *args, code=2)
    assert message in result.output
    assert cli.json("clients", "list") == []


def test_http_loopback_redirect_only_in_development(cli: Cli) -> None:
    production = {"SSO_DEVELOPMENT": "false", "SSO_ISSUER": "https://sso.example.gov.cn"}
    result = cli(
        "clients",
        "create",
        "--name",
        "Dev",
        "--redirect-uri",
        "http://127.0.0.1:7000/cb",
        code=2,
        env=production,
    )
    assert "may use http on loopback only in development: http://127.0.0.1:7000/cb" in result.output
    result = cli(
        "clients",
        "create",
        "--name",
        "Dev",
        "--redirect-uri",
        "http://localhost/cb",
        code=2,
        env=production,
    )
    assert "only in development" in result.output
    # The same URIs are fine in development.
    create(cli, "--redirect-uri", "http://127.0.0.1:7000/cb", "--redirect-uri", "http://localhost/cb")


def test_several_problems_are_reported_together(cli: Cli) -> None:
    result = cli(
        "clients",
        "create",
        "--name",
        "Bad",
        "--redirect-uri",
        "/relative",
        "--grant-type",
        "implicit",
        "--auth-method",
        "nope",
        code=2,
    )
    for part in ("must be absolute", "unknown grant type", "unknown auth method"):
        assert part in result.output
    assert result.output.count("error:") == 1


def _rsa_public_jwks() -> dict[str, Any]:
    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    return {"keys": [key.as_dict(private=False)]}


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # the 1024-bit key
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read JWKS file"),
        ('["a", "list"]', "must hold an object with a 'keys' list"),
        ('{"kty": "RSA"}', "must hold an object with a 'keys' list"),
        ('{"keys": []}', "non-empty 'keys' list"),
        ('{"keys": [{"kty": "RSA"}]}', "JWKS key 0 is not a valid public key"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "kty must be RSA or EC"),
        ("EC_PRIVATE", "private key material"),
        ("RSA_1024", "at least 2048 bits"),
    ],
)
def test_private_key_jwt_rejects_a_bad_jwks_file(cli: Cli, tmp_path: Path, content: str, message: str) -> None:
    if content == "EC_PRIVATE":
        content = json.dumps({"keys": [ECKey.generate_key("P-256").as_dict(private=True)]})
    elif content == "RSA_1024":
        small = RSAKey.generate_key(1024, private=True).as_dict(private=False)
        content = json.dumps({"keys": [small]})
    path = tmp_path / "jwks.json"
    path.write_text(content)
    result = cli(
        "clients",
        "create",
        "--name",
        "Signed",
        "--redirect-uri",
        REDIRECT,
        "--auth-method",
        "private_key_jwt",
        "--jwks-file",
        str(path),
        code=2,
    )
    assert message in result.output
    assert cli.json("clients", "list") == []


def test_jwks_file_must_exist_and_is_only_for_private_key_jwt(cli: Cli, tmp_path: Path) -> None:
    result = cli(
        "clients",
        "create",
        "--name",
        "Signed",
        "--redirect-uri",
        REDIRECT,
        "--auth-method",
        "private_key_jwt",
        "--jwks-file",
        str(tmp_path / "missing.json"),
        code=2,
    )
    assert "missing.json" in result.output and "does not exist" in result.output
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(_rsa_public_jwks()))
    result = cli(
        "clients",
        "create",
        "--name",
        "Secret",
        "--redirect-uri",
        REDIRECT,
        "--jwks-file",
        str(path),
        code=2,
    )
    assert "only used with the private_key_jwt auth method" in result.output


def test_private_key_jwt_client_authenticates_with_its_registered_key(cli: Cli, tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    data = create(
        cli,
        "--redirect-uri",
        REDIRECT,
        "--auth-method",
        "private_key_jwt",
        "--jwks-file",
        str(path),
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "client_credentials",
    )
    assert data["has_jwks"] is True and "client_secret" not in data
    now = int(time.time())
    claims = {
        "iss": data["client_id"],
        "sub": data["client_id"],
        "aud": ISSUER + "/token",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    assertion = jose_jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
    response = (
        cli.app()
        .test_client()
        .post(
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            },
        )
    )
    assert response.status_code == 200, response.text
    assert "access_token" in response.get_json()


# ---- list / show / update ----------------------------------------------------------------


def test_list_show_and_update(cli: Cli) -> None:
    assert cli("clients", "list").stdout.strip() == "no clients"
    first = create(cli, "--redirect-uri", REDIRECT, name="First")
    second = create(cli, "--public", "--redirect-uri", "http://127.0.0.1:7000/cb", name="第二 Second")

    rows = cli.json("clients", "list")
    assert [r["client_id"] for r in rows] == [first["client_id"], second["client_id"]]
    text = cli("clients", "list").stdout
    assert f"{first['client_id']}\tenabled\tFirst" in text
    assert "第二 Second" in text

    shown = cli.json("clients", "show", first["client_id"])
    assert shown["name"] == "First" and shown["redirect_uris"] == [REDIRECT]
    assert f"client_id: {first['client_id']}" in cli("clients", "show", first["client_id"]).stdout

    updated = cli.json(
        "clients",
        "update",
        first["client_id"],
        "--name",
        "Renamed",
        "--redirect-uri",
        "https://new.example.gov.cn/cb",
        "--redirect-uri",
        "https://new.example.gov.cn/cb2",
        "--post-logout-redirect-uri",
        "https://new.example.gov.cn/",
        "--scope",
        "openid",
        "--id-token-alg",
        "ES256",
    )
    assert updated["name"] == "Renamed"
    assert updated["redirect_uris"] == [
        "https://new.example.gov.cn/cb",
        "https://new.example.gov.cn/cb2",
    ]
    assert updated["post_logout_redirect_uris"] == ["https://new.example.gov.cn/"]
    assert updated["scope"] == "openid"
    assert updated["id_token_signed_response_alg"] == "ES256"
    assert cli.json("clients", "show", first["client_id"]) == updated

    # Unchanged fields stay; an invalid update changes nothing.
    result = cli("clients", "update", first["client_id"], "--redirect-uri", "http://evil.example/cb", code=2)
    assert "redirect URI must use https" in result.output
    assert cli.json("clients", "show", first["client_id"]) == updated


def test_subject_type_sector_and_full_id_number_approval(cli: Cli) -> None:
    default = create(cli, "--redirect-uri", REDIRECT)
    assert (default["subject_type"], default["sector_identifier"], default["full_id_number_allowed"]) == (
        "pairwise",
        None,
        False,
    )
    shared = create(
        cli,
        "--redirect-uri",
        REDIRECT,
        "--sector-identifier",
        "https://sector.example.gov.cn/uris.json",
        "--allow-full-id-number",
    )
    assert shared["sector_identifier"] == "https://sector.example.gov.cn/uris.json"
    assert shared["full_id_number_allowed"] is True
    public = create(cli, "--redirect-uri", REDIRECT, "--subject-type", "public")
    assert public["subject_type"] == "public"

    withdrawn = cli.json("clients", "update", shared["client_id"], "--deny-full-id-number")
    assert withdrawn["full_id_number_allowed"] is False
    approved = cli.json("clients", "update", default["client_id"], "--allow-full-id-number")
    assert approved["full_id_number_allowed"] is True


def test_moving_redirect_uris_keeps_pairwise_subjects(cli: Cli) -> None:
    data = create_service(cli, "--client-id", "tax-portal")
    assert data["subject_type"] == "pairwise" and data["sector_identifier"] is None
    client = cli.app().test_client()
    add_user(cli)
    before = pyjwt.decode(
        sign_in_and_redeem(client, Portal("tax-portal", data["client_secret"]))["id_token"],
        options={"verify_signature": False},
    )

    moved = "https://new-host.example.gov.cn/callback"
    updated = cli.json("clients", "update", "tax-portal", "--redirect-uri", moved)
    assert updated["sector_identifier"] == "portal.example.gov.cn"  # pinned: the old host
    after = pyjwt.decode(
        sign_in_and_redeem(client, Portal("tax-portal", data["client_secret"], moved))["id_token"],
        options={"verify_signature": False},
    )
    assert after["sub"] == before["sub"]


def test_rotate_secret_invalidates_the_old_secret(cli: Cli) -> None:
    data = create_service(cli)
    client_id, old = data["client_id"], data["client_secret"]
    client = cli.app().test_client()
    assert client_credentials(client, client_id, old).status_code == 200

    rotated = cli.json("clients", "rotate-secret", client_id)
    new = rotated["client_secret"]
    assert rotated["client_id"] == client_id and new != old
    assert len(base64.urlsafe_b64decode(new + "=" * (-len(new) % 4))) >= 32

    refused = client_credentials(client, client_id, old)
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_client"
    accepted = client_credentials(client, client_id, new)
    assert accepted.status_code == 200, accepted.text

    text = cli("clients", "rotate-secret", client_id).stdout
    assert text.startswith("client_secret: ")


def test_disabled_client_cannot_get_tokens_or_authorize(cli: Cli) -> None:
    data = create_service(cli)
    client_id, secret = data["client_id"], data["client_secret"]
    client = cli.app().test_client()
    assert client_credentials(client, client_id, secret).status_code == 200

    out = cli("clients", "disable", client_id).stdout
    assert f"{client_id} disabled" in out
    assert cli.json("clients", "show", client_id)["disabled"] is True
    assert f"{client_id}\tdisabled" in cli("clients", "list").stdout

    refused = client_credentials(client, client_id, secret)
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_client"

    page = client.get(
        "/authorize",
        query_string={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        },
    )
    # Never a redirect to the (unverifiable) redirect URI: an error page.
    assert page.status_code == 400
    assert "Location" not in page.headers
    assert page.mimetype == "text/html"
    assert "invalid_client" in page.text

    assert cli.json("clients", "update", client_id, "--enable")["disabled"] is False
    assert client_credentials(client, client_id, secret).status_code == 200


def test_delete_removes_the_client_and_revokes_its_grants(cli: Cli) -> None:
    data = create_service(cli, "--client-id", "tax-portal")
    portal = Portal("tax-portal", data["client_secret"])
    client = cli.app().test_client()
    add_user(cli)
    tokens = sign_in_and_redeem(client, portal)

    out = cli("clients", "delete", "tax-portal").stdout
    assert "tax-portal deleted" in out
    result = cli("clients", "show", "tax-portal", code=1)
    assert "no client with id tax-portal" in result.output
    assert cli.json("clients", "list") == []
    assert client_credentials(client, "tax-portal", portal.secret or "").get_json()["error"] == "invalid_client"

    # A portal registered again under the same id inherits nothing.
    again = create_service(cli, "--client-id", "tax-portal")
    refreshed = client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(Portal("tax-portal", again["client_secret"])),
    )
    assert refreshed.status_code == 400
    assert refreshed.get_json()["error"] == "invalid_grant"
    assert client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]}).status_code == 401

    assert "deleted" in json.dumps(cli.json("clients", "delete", "tax-portal"))
    result = cli("clients", "delete", "tax-portal", code=1)
    assert "no client with id tax-portal" in result.output


@pytest.mark.parametrize(
    "command",
    [["show"], ["update", "--name", "x"], ["rotate-secret"], ["disable"], ["delete"]],
)
def test_unknown_client_id_exits_1_with_a_message(cli: Cli, command: list[str]) -> None:
    result = cli("clients", command[0], "no-such-portal", *command[1:], code=1)
    assert "error: no client with id no-such-portal" in result.output


# ---- keys ---------------------------------------------------------------------------------


def _active_kid(cli: Cli, alg: str = "RS256") -> str:
    rows = cli.json("keys", "list")
    (kid,) = [r["kid"] for r in rows if r["alg"] == alg and r["state"] == "active"]
    return str(kid)


def test_keys_list(cli: Cli) -> None:
    rows = cli.json("keys", "list")
    assert sorted(r["alg"] for r in rows) == ["ES256", "RS256"]
    assert {r["state"] for r in rows} == {"active"}
    assert all(r["kid"] and r["activates_at"].endswith("Z") and r["retired_at"] is None for r in rows)
    text = cli("keys", "list").stdout
    for row in rows:
        assert f"{row['kid']}\t{row['alg']}\tactive" in text


def test_rotated_key_is_published_before_it_signs(cli: Cli) -> None:
    data = create_service(cli)
    portal = Portal(data["client_id"], data["client_secret"])
    old = _active_kid(cli)

    new = cli.json("keys", "rotate", "--activate-in", "600")
    assert new["alg"] == "RS256" and new["kid"] != old
    states = {r["kid"]: r["state"] for r in cli.json("keys", "list")}
    assert states[old] == "active" and states[new["kid"]] == "next"

    client = cli.app().test_client()
    published = {k["kid"] for k in client.get("/jwks").get_json()["keys"]}
    assert {old, new["kid"]} <= published

    add_user(cli)
    tokens = sign_in_and_redeem(client, portal)
    assert kid_of(tokens["access_token"]) == old
    assert kid_of(tokens["id_token"]) == old
    assert verify_with_jwks(client, tokens["id_token"])["aud"] == portal.client_id
    assert kid_of(client_credentials(client, portal.client_id, portal.secret or "").get_json()["access_token"]) == old


def test_rotated_key_signs_at_once_with_activate_in_0(cli: Cli) -> None:
    data = create_service(cli)
    portal = Portal(data["client_id"], data["client_secret"])
    old = _active_kid(cli)
    client = cli.app().test_client()
    add_user(cli)
    before = sign_in_and_redeem(client, portal)
    assert kid_of(before["id_token"]) == old

    text = cli("keys", "rotate", "--activate-in", "0").stdout
    assert "published; signs from" in text
    new = _active_kid(cli)
    assert new != old
    states = {r["kid"]: r["state"] for r in cli.json("keys", "list")}
    assert states[old] == "retired"

    client = cli.app().test_client()
    published = {k["kid"] for k in client.get("/jwks").get_json()["keys"]}
    assert {old, new} <= published  # the old key still verifies tokens it signed

    after = sign_in_and_redeem(client, portal)
    assert kid_of(after["access_token"]) == new
    assert kid_of(after["id_token"]) == new
    verify_with_jwks(client, after["id_token"])
    verify_with_jwks(client, before["id_token"])


def test_rotate_es256_and_bad_options(cli: Cli) -> None:
    old = _active_kid(cli, "ES256")
    new = cli.json("keys", "rotate", "--alg", "ES256", "--activate-in", "0")
    assert new["alg"] == "ES256" and _active_kid(cli, "ES256") == new["kid"] != old
    assert "HS256" in cli("keys", "rotate", "--alg", "HS256", code=2).output
    assert "--activate-in" in cli("keys", "rotate", "--activate-in", "-1", code=2).output


# ---- db, accounts ---------------------------------------------------------------------------


def test_db_upgrade_is_idempotent_and_creates_keys(cli: Cli, tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from sso.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    first = cli("db", "upgrade").stdout
    assert first.strip() == f"database at revision {head}"
    assert (tmp_path / "sso.sqlite3").exists()
    assert cli("db", "upgrade").stdout == first
    assert len(cli.json("keys", "list")) == 2


def test_accounts_create(cli: Cli) -> None:
    out = cli(
        "accounts",
        "create",
        "--username",
        "zhangsan",
        "--name",
        "张三",
        "--password",
        "pass-word-1",
    ).stdout
    assert "account zhangsan created" in out
    result = cli(
        "accounts",
        "create",
        "--username",
        "zhangsan",
        "--name",
        "Other",
        "--password",
        "pass-word-2",
        code=2,
    )
    assert "username zhangsan is taken" in result.output
    result = cli("accounts", "create", "--username", "lisi", "--name", "李四", "--password", "short", code=2)
    assert "at least 8 characters" in result.output
    # Prompted (twice) when not given.
    prompted = cli(
        "accounts",
        "create",
        "--username",
        "wangwu",
        "--name",
        "王五",
        input="pass-word-3\npass-word-3\n",
    )
    assert "account wangwu created" in prompted.stdout

    app = cli.app()
    with app.app_context():
        connector = app.extensions["sso"].connectors.default
        identity = connector.login("zhangsan", "pass-word-1")
        assert identity is not None and identity.display_name == "张三"
        assert connector.login("zhangsan", "pass-word-2") is None
        assert connector.login("wangwu", "pass-word-3") is not None


# ---- configuration --------------------------------------------------------------------------


def test_config_problems_are_reported_together(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('colour = "blue"\naccess_token_ttl = "ten minutes"\n')
    for args, env in ((("--config", str(config)), {}), ((), {"SSO_CONFIG": str(config)})):
        result = cli(*args, "clients", "list", code=2, env=env)
        assert result.output.count("error: invalid configuration") == 1
        assert f"unknown key in {config}: colour" in result.output
        assert "access_token_ttl: expected int, got 'ten minutes'" in result.output


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SSO_COLOUR": "blue"}, "unknown environment variable: SSO_COLOUR"),
        ({"SSO_DEVELOPMENT": "false"}, "issuer must use https outside development"),
        ({"SSO_ACCESS_TOKEN_TTL": "0"}, "access_token_ttl must be positive"),
        ({"SSO_KEY_ENCRYPTION_KEY": "c2hvcnQ"}, "key_encryption_key must decode to 32 bytes"),
        ({"SSO_CONFIG": "/nonexistent/sso.toml"}, "config file not found: /nonexistent/sso.toml"),
    ],
)
def test_config_errors_exit_non_zero_with_a_message(cli: Cli, env: dict[str, str], message: str) -> None:
    result = cli("keys", "list", code=2, env=env)
    assert "invalid configuration" in result.output
    assert message in result.output


def test_a_different_key_encryption_key_is_a_clear_error(cli: Cli) -> None:
    cli("db", "upgrade")  # keys sealed under the generated key file
    other = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    for args in (("keys", "list"), ("db", "upgrade"), ("serve",)):
        result = cli(*args, code=2, env={"SSO_KEY_ENCRYPTION_KEY": other})
        assert "signing keys in the database cannot be decrypted" in result.output


def test_unreachable_database_is_a_clear_error(cli: Cli) -> None:
    env = {"SSO_DATABASE_URL": "postgresql+psycopg://sso:hunter2@127.0.0.1:1/sso"}
    for args in (("clients", "list"), ("db", "upgrade")):
        result = cli(*args, code=2, env=env)
        assert "cannot use the database postgresql+psycopg://sso:***@127.0.0.1:1/sso" in result.output
        assert "hunter2" not in result.output


def _uncommented_defaults(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.startswith("# ") and " = " in line and line[2:].split(" = ")[0].isidentifier():
            lines.append(line[2:])
    return "\n".join(lines) + "\n"


def test_default_toml_documents_every_setting_with_its_default(tmp_path: Path) -> None:
    # The built-in issuer is http, so the defaults validate only in development.
    dev = {"SSO_DEVELOPMENT": "true"}
    expected = dataclasses.replace(Settings(), development=True)
    path = ROOT / "config" / "default.toml"
    assert load_settings(path, environ=dev) == expected  # all commented out
    uncommented = tmp_path / "all.toml"
    uncommented.write_text(_uncommented_defaults(path.read_text(encoding="utf-8")), encoding="utf-8")
    documented = tomllib.loads(uncommented.read_text(encoding="utf-8"))
    assert set(documented) == {f.name for f in dataclasses.fields(Settings)}
    # Every value shown is the real default, and the file with all of them loads.
    assert documented == dataclasses.asdict(Settings())
    assert load_settings(uncommented, environ=dev) == expected


def test_dev_and_production_example_configs_load() -> None:
    dev = load_settings(ROOT / "config" / "dev.toml", environ={})
    assert dev.development and not dev.database_url and not dev.redis_url
    assert dev.resolved_database_url.startswith("sqlite:///")
    prod = load_settings(ROOT / "config" / "production.example.toml", environ={})
    assert not prod.development and not prod.demo
    assert prod.issuer.startswith("https://")
    assert prod.database_url.startswith("postgresql+psycopg://")
    assert prod.redis_url.startswith("redis://")


# ---- serve / demo -----------------------------------------------------------------------------


def test_help_of_every_command(cli: Cli) -> None:
    top = cli("--help").stdout
    for command in ("serve", "demo", "db", "clients", "keys", "accounts"):
        assert command in top
    assert "Run on the embedded default" in cli("demo", "--help").stdout
    assert "--port" in cli("serve", "--help").stdout
    for group, commands in {
        "clients": ["create", "list", "show", "update", "rotate-secret", "disable", "delete"],
        "keys": ["list", "rotate"],
        "db": ["upgrade"],
        "accounts": ["create"],
    }.items():
        out = cli(group, "--help").stdout
        for command in commands:
            assert command in out
            cli(group, command, "--help")


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Flask.run records its arguments instead of serving."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        Flask,
        "run",
        lambda self, **kw: calls.append({"issuer": self.extensions["sso"].settings.issuer, **kw}),
    )
    return calls


def test_demo_seeds_an_account_and_the_two_portals(cli: Cli, tmp_path: Path, no_server: list[dict[str, Any]]) -> None:
    out = cli("demo", "--port", "5099").stdout
    username, password, _ = DEMO_USER
    assert "http://127.0.0.1:5099" in out
    assert "http://127.0.0.1:5099/.well-known/openid-configuration" in out
    assert f"Demo account: {username} / {password}" in out
    assert "client_id=tax-portal" in out and "client_id=social-portal" in out
    assert str(tmp_path / "demo-clients.json") in out
    # The journey: sign in at the tax portal as 张三, then the social-security portal, then sign out.
    journey = out[out.index("Try single sign-on"):]
    assert journey.index("http://127.0.0.1:5001") < journey.index("http://127.0.0.1:5002")
    assert f"张三: {DEMO_CITIZEN.id_number} / {DEMO_CITIZEN_PASSWORDS['张三']}" in journey
    assert no_server == [
        {
            "issuer": "http://127.0.0.1:5099",
            "host": "127.0.0.1",
            "port": 5099,
            "threaded": True,
            "use_reloader": False,
        }
    ]

    # The mock registries hold the fixed demo people and enterprises.
    with contextlib.closing(sqlite3.connect(tmp_path / "registry.sqlite3")) as registry:
        people = {row[0] for row in registry.execute("SELECT id_number FROM people")}
        enterprises = {row[0] for row in registry.execute("SELECT credit_code FROM enterprises")}
    assert {p.id_number for p in DEMO_PEOPLE} <= people
    assert {e.credit_code for e in DEMO_ENTERPRISES} <= enterprises

    saved_path = tmp_path / "demo-clients.json"
    assert stat.S_IMODE(saved_path.stat().st_mode) == 0o600
    saved = json.loads(saved_path.read_text())
    assert set(saved) == {"tax-portal", "social-portal"}
    for entry in saved.values():
        assert entry["client_secret"] not in out  # on disk, not on the screen
        assert entry["issuer"] == "http://127.0.0.1:5099"  # the portals find the gateway here

    # Idempotent: a second start keeps the same portal secrets; a new port moves the issuer only.
    cli("demo", "--port", "5099")
    assert json.loads(saved_path.read_text()) == saved
    cli("demo", "--port", "5098")
    moved = json.loads(saved_path.read_text())
    assert {k: v["client_secret"] for k, v in moved.items()} == {k: v["client_secret"] for k, v in saved.items()}
    assert moved["tax-portal"]["issuer"] == "http://127.0.0.1:5098"

    client = cli.app().test_client()
    for cid, port in (("tax-portal", 5001), ("social-portal", 5002)):
        base = f"http://127.0.0.1:{port}"
        portal = Portal(cid, saved[cid]["client_secret"], base + "/callback")
        # A code-flow client: the secret authenticates (no client_credentials grant).
        response = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal))
        assert response.get_json()["error"] == "unauthorized_client"
        shown = cli.json("clients", "show", cid)
        assert shown["redirect_uris"] == [base + "/callback"]
        assert shown["post_logout_redirect_uris"] == [base + "/"]
        assert shown["backchannel_logout_uri"] == base + "/backchannel-logout"
        assert shown["scope"] == "openid profile phone address cn_identity cn_legal_person"


def test_demo_brings_an_older_portal_registration_up_to_date(
    cli: Cli, tmp_path: Path, no_server: list[dict[str, Any]]
) -> None:
    cli("demo")
    secret = json.loads((tmp_path / "demo-clients.json").read_text())["tax-portal"]["client_secret"]
    cli("clients", "update", "tax-portal", "--backchannel-logout-uri", "", "--scope", "openid")
    cli("demo")
    shown = cli.json("clients", "show", "tax-portal")
    assert shown["backchannel_logout_uri"] == "http://127.0.0.1:5001/backchannel-logout"
    assert "cn_legal_person" in shown["scope"].split()
    assert json.loads((tmp_path / "demo-clients.json").read_text())["tax-portal"]["client_secret"] == secret


def test_serve_runs_with_the_configured_issuer(cli: Cli, no_server: list[dict[str, Any]]) -> None:
    out = cli("serve", "--port", "5123").stdout
    assert f"Gateway at {ISSUER}" in out
    assert no_server[0]["port"] == 5123 and no_server[0]["host"] == "127.0.0.1"
    result = cli("serve", code=2, env={"SSO_DEVELOPMENT": "false"})
    assert "issuer must use https outside development" in result.output
    assert len(no_server) == 1


# ---- the README's commands ----------------------------------------------------------------------


def test_readme_starts_with_the_two_commands_and_ci_uses_the_same() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    head = readme[:600]
    assert head.index("./scripts/dev.sh") < head.index("./scripts/test.sh")
    for script in ("scripts/dev.sh", "scripts/test.sh", ".ci/run"):
        path = ROOT / script
        assert path.read_text().startswith("#!/usr/bin/env bash")
        assert os.access(path, os.X_OK), f"{script} is not executable"
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    for command in ("rotate-secret", "keys rotate", "db upgrade", "accounts create", "sso serve"):
        assert command in readme


# ---- accounts disable / enable ----------------------------------------------------------


def test_disable_ends_sessions_revokes_tokens_and_stops_sign_in(cli: Cli) -> None:
    add_user(cli)
    data = create_service(cli)
    portal = Portal(data["client_id"], data["client_secret"])
    app = cli.app()
    client = app.test_client()
    with app.app_context():
        tokens = sign_in_and_redeem(client, portal)
    assert Browser(client).authorize(portal, prompt="none").status_code == 302  # signed in

    result = cli("accounts", "disable", USERNAME)
    assert "1 session(s) ended" in result.output
    assert "already disabled" in cli("accounts", "disable", USERNAME).output

    with app.app_context():
        # The refresh token and the access token stopped at once.
        refreshed = client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            headers=basic(portal),
        )
        assert refreshed.status_code == 400 and refreshed.get_json()["error"] == "invalid_grant"
        userinfo = client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})
        assert userinfo.status_code == 401
        # The browser's session ended: prompt=none now says login_required.
        silent = Browser(client).authorize(portal, prompt="none")
        assert "error=login_required" in silent.location
        # And the password no longer signs in: the login page answers again, no redirect.
        fresh = Browser(app.test_client())
        start = fresh.authorize(portal, code_challenge="x" * 43, code_challenge_method="S256")
        assert start.status_code == 302 and start.location.startswith("/login")
        refused = fresh.login(start.location)
        assert refused.status_code in (200, 401) and "csrf_token" in refused.text
        assert refused.headers.get("Location") is None

    cli("accounts", "enable", USERNAME)
    assert "already active" in cli("accounts", "enable", USERNAME).output
    with app.app_context():
        assert sign_in_and_redeem(app.test_client(), portal)["access_token"]
        # Tokens from before the disablement stay revoked.
        again = client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            headers=basic(portal),
        )
        assert again.get_json()["error"] == "invalid_grant"
        events = [e.event for e in _audit_events(app)]
    assert "account.disabled" in events and "account.enabled" in events


def _audit_events(app: Flask) -> list[Any]:
    from sso.db import db
    from sso.models import AuditEvent

    return list(db.session.execute(db.select(AuditEvent).order_by(AuditEvent.id)).scalars())


def test_disable_unknown_account_is_a_clear_error(cli: Cli) -> None:
    result = cli("accounts", "disable", "nobody", code=1)
    assert "no account with username, phone or identity number nobody" in result.output
