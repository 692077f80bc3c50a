"""Parsing of the claims request parameter (OIDC Core §5.5)."""

from __future__ import annotations

import json

import pytest

from sso.claims_request import ClaimsRequest, InvalidClaimsRequest, for_id_token, parse


def test_absent_is_none():
    assert parse(None) is None and parse("") is None


def test_members_and_essential_acr():
    req = parse(
        json.dumps(
            {
                "id_token": {"acr": {"essential": True, "values": ["urn:cn:sso:loa:3"]}, "name": None},
                "userinfo": {"phone_number": {"essential": True}},
            }
        )
    )
    assert req is not None
    assert req.essential_acr_values() == "urn:cn:sso:loa:3"
    assert set(req.id_token) == {"acr", "name"} and set(req.userinfo) == {"phone_number"}
    assert ClaimsRequest.from_json(req.to_json()) == req


def test_single_value_form_of_acr():
    req = parse(json.dumps({"id_token": {"acr": {"essential": True, "value": "urn:cn:sso:loa:2"}}}))
    assert req.essential_acr_values() == "urn:cn:sso:loa:2"


def test_voluntary_acr_is_not_a_requirement():
    assert parse(json.dumps({"id_token": {"acr": {"values": ["urn:cn:sso:loa:3"]}}})).essential_acr_values() is None


@pytest.mark.parametrize(
    "raw, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"other": {}}', "may only have"),
        ('{"id_token": []}', "'claims.id_token' must be a JSON object"),
        ('{"userinfo": {"name": 1}}', "must be null or an object"),
        ('{"userinfo": {"name": {"essential": "yes"}}}', "must be true or false"),
        ('{"userinfo": {"name": {"values": "a"}}}', "must be a list"),
        ("{" + '"userinfo": {' + ",".join(f'"c{i}": null' for i in range(600)) + "}}", "too long"),
    ],
)
def test_malformed(raw, message):
    with pytest.raises(InvalidClaimsRequest, match=message):
        parse(raw)


def test_id_token_gets_only_released_non_protocol_claims():
    req = parse(json.dumps({"id_token": {"name": None, "phone_number": None, "sub": None}}))
    released = {"sub": "x", "name": "张三"}
    assert for_id_token(req, released) == {"name": "张三"}
    assert for_id_token(None, released) == {}
