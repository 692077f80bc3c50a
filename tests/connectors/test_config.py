"""[[connectors]] configuration: a province's module is picked up by type, mistakes are reported at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from examples.connectors.neighbour_gateway import NeighbourGateway
from sso.config import ConfigError, load_settings
from sso.connectors import CONNECTOR_TYPES, build_connectors
from sso.connectors.base import PasswordLogin, RedirectLogin
from tests.connectors import FakeNeighbour, NeighbourGatewayHarness, follow_to_callback

NEIGHBOUR_TYPE = "examples.connectors.neighbour_gateway:NeighbourGateway"
CALLBACK = NeighbourGatewayHarness.callback_url
BASE = {"issuer": "http://127.0.0.1:5000", "development": True}


def config_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sso.toml"
    path.write_text(f'issuer = "http://127.0.0.1:5000"\ndevelopment = true\ninstance_path = "{tmp_path}"\n' + body)
    return path


def problems_of(**kwargs: Any) -> list[str]:
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    return info.value.problems


# ---- a province's connector: a module plus a config entry ------------------------------------------


def test_neighbour_gateway_from_a_toml_entry_is_built_and_signs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeNeighbour().running() as upstream:
        (tmp_path / "neighbour-zj.jwks.json").write_text(json.dumps(upstream.jwks()))
        monkeypatch.setenv("NEIGHBOUR_ZJ_SECRET", upstream.client_secret)
        path = config_file(
            tmp_path,
            f"""
[[connectors]]
type = "accounts"
id = "accounts"
name = "统一身份认证账号"

[[connectors]]
type = "{NEIGHBOUR_TYPE}"
id = "neighbour-zj"
name = "浙江政务服务网"

[connectors.settings]
issuer = "{upstream.issuer}"
authorization_endpoint = "{upstream.issuer}/authorize"
token_endpoint = "{upstream.issuer}/token"
client_id = "{upstream.client_id}"
client_secret_env = "NEIGHBOUR_ZJ_SECRET"
jwks_file = "neighbour-zj.jwks.json"
scopes = ["openid", "profile"]

[connectors.settings.assurance_by_acr]
"urn:cn:sso:loa:2" = "registry-verified"
""",
        )
        settings = load_settings(path, environ={})
        connectors = build_connectors(settings)

        neighbour = connectors.get("neighbour-zj")
        assert isinstance(neighbour, NeighbourGateway) and isinstance(neighbour, RedirectLogin)
        assert neighbour.name == "浙江政务服务网"
        assert isinstance(connectors.default, PasswordLogin) and connectors.default.id == "accounts"
        params = follow_to_callback(neighbour.login_url(CALLBACK, "state-config"), CALLBACK)
        identity = neighbour.handle_callback(params, CALLBACK)
        assert (identity.connector_id, identity.assurance) == ("neighbour-zj", "registry-verified")


def test_neighbour_gateway_from_sso_connectors_json(tmp_path: Path) -> None:
    upstream = FakeNeighbour(port=8443)  # not started: building needs no network
    entries = [
        {"type": "accounts", "id": "accounts", "name": "账号"},
        {"type": NEIGHBOUR_TYPE, "id": "neighbour-zj", "name": "浙江", "settings": upstream.settings()},
    ]
    settings = load_settings(
        overrides={**BASE, "instance_path": str(tmp_path)}, environ={"SSO_CONNECTORS": json.dumps(entries)}
    )
    assert [c.id for c in build_connectors(settings)] == ["accounts", "neighbour-zj"]


def test_the_gateway_starts_with_the_neighbour_configured(tmp_path: Path) -> None:
    from sso import create_app

    upstream = FakeNeighbour(port=8443)
    entries = [
        {"type": "accounts", "id": "accounts", "name": "账号"},
        {"type": "population-registry", "id": "population", "name": "人口库"},
        {"type": NEIGHBOUR_TYPE, "id": "neighbour-zj", "name": "浙江", "settings": upstream.settings()},
    ]
    settings = load_settings(
        overrides={**BASE, "instance_path": str(tmp_path / "instance"), "connectors": entries}, environ={}
    )
    app = create_app(settings)
    assert isinstance(app.extensions["sso"].connectors.get("neighbour-zj"), NeighbourGateway)


def test_neighbour_settings_problems_are_all_reported() -> None:
    with pytest.raises(ValueError, match="connector neighbour-zj: ") as info:
        NeighbourGateway.from_config(
            "neighbour-zj",
            "浙江",
            {"issuer": "http://sso.zj.example.gov.cn", "scopes": ["profile"], "jwks": {"keys": []}, "colour": 1},
            "",
        )
    message = str(info.value)
    for expected in (
        "settings.issuer must be an https URL",
        "settings.authorization_endpoint is required",
        "settings.token_endpoint is required",
        "settings.client_id is required",
        "exactly one of client_secret and client_secret_env",
        "unusable JWKS",
        "settings.scopes must be a list of strings including 'openid'",
        "unknown key(s) colour",
    ):
        assert expected in message, (expected, message)


def test_neighbour_jwks_must_not_hold_private_keys() -> None:
    upstream = FakeNeighbour(port=8443)
    private = {"keys": [upstream.signing_key.as_dict(private=True)]}
    problems = NeighbourGateway.check_settings({**upstream.settings(), "jwks": private}, "")
    assert problems == ["settings: the JWKS must hold public keys only"]


def test_connector_settings_problems_surface_in_load_settings(tmp_path: Path) -> None:
    entries = [{"type": NEIGHBOUR_TYPE, "id": "neighbour-zj", "name": "浙江", "settings": {"issuer": "ftp://x"}}]
    problems = problems_of(overrides={**BASE, "instance_path": str(tmp_path), "connectors": entries})
    assert any("settings.token_endpoint is required" in p for p in problems)


# ---- mistakes in [[connectors]], all reported by load_settings ---------------------------------------


def test_unknown_type_lists_the_known_types(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[[connectors]]\ntype = "ldap"\nid = "ldap"\nname = "LDAP"\n')
    (problem,) = problems_of(path=path)
    assert problem.startswith("connectors[0]: unknown type 'ldap'")
    for known in CONNECTOR_TYPES:
        assert known in problem
    assert "module:Class" in problem


@pytest.mark.parametrize(
    "type_name",
    ["no_such_package.connectors:Thing", "examples.connectors.neighbour_gateway:NoSuchClass", "sso.connectors:"],
)
def test_unimportable_module_class_is_an_unknown_type(tmp_path: Path, type_name: str) -> None:
    entries = [{"type": type_name, "id": "x", "name": "X"}]
    (problem,) = problems_of(overrides={**BASE, "instance_path": str(tmp_path), "connectors": entries})
    assert f"unknown type {type_name!r}" in problem


def test_duplicate_ids(tmp_path: Path) -> None:
    entries = [
        {"type": "accounts", "id": "accounts", "name": "A"},
        {"type": "population-registry", "id": "accounts", "name": "B"},
    ]
    problems = problems_of(overrides={**BASE, "instance_path": str(tmp_path), "connectors": entries})
    assert problems == ["connectors[1]: duplicate id 'accounts'"]


def test_missing_keys(tmp_path: Path) -> None:
    path = config_file(tmp_path, "[[connectors]]\nsettings = {}\n")
    assert problems_of(path=path) == [
        "connectors[0]: 'type' is required",
        "connectors[0]: 'id' is required",
        "connectors[0]: 'name' is required",
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        """
access_token_ttl = -1

[[connectors]]
type = "ldap"
id = "a"
name = "A"

[[connectors]]
type = "accounts"
id = "a"
name = "B"
colour = "red"

[[connectors]]
type = "population-registry"
id = "p"
settings = "postgresql://registry"
""",
    )
    problems = problems_of(path=path)
    assert problems[0] == "access_token_ttl must be positive"
    assert problems[1].startswith("connectors[0]: unknown type 'ldap'")
    assert problems[2:] == [
        "connectors[1]: unknown key(s) colour",
        "connectors[1]: duplicate id 'a'",
        "connectors[2]: 'name' is required",
        "connectors[2]: 'settings' must be a table",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("not json", "SSO_CONNECTORS: expected a JSON list"),
        ('{"type": "accounts"}', "SSO_CONNECTORS: expected a list, got dict"),
        ('["accounts"]', "connectors[0] must be a table"),
    ],
)
def test_sso_connectors_must_be_a_json_list_of_tables(tmp_path: Path, raw: str, expected: str) -> None:
    problems = problems_of(overrides={**BASE, "instance_path": str(tmp_path)}, environ={"SSO_CONNECTORS": raw})
    assert problems == [expected]


def test_a_type_that_is_not_a_connector_class_is_reported(tmp_path: Path) -> None:
    entries = [{"type": "json:dumps", "id": "x", "name": "X"}]
    problems = problems_of(overrides={**BASE, "instance_path": str(tmp_path), "connectors": entries})
    assert any("json:dumps" in p for p in problems)
