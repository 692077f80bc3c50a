"""The authorization request's PKCE and repeated-parameter checks: Authlib's, read cheaply.

sso.oidc.grants re-states CodeChallenge.validate_code_challenge's and
validate_no_multiple_request_parameter's checks (same order, same words) reading each
parameter alone, instead of through ``payload.datalist``, which builds every
parameter's list on each use.  Pinned here: the same answers as Authlib's own for
every case, and no ``datalist`` built by them.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.grants.base import AuthorizationEndpointMixin
from authlib.oauth2.rfc7636 import CodeChallenge
from werkzeug.datastructures import CombinedMultiDict, MultiDict

from sso.oidc.grants import AuthorizationCodeGrant, S256CodeChallenge
from sso.oidc.requests import GatewayPayload

GOOD = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


class CountingPayload(GatewayPayload):
    built = 0

    @property
    def datalist(self):  # type: ignore[no-untyped-def]
        CountingPayload.built += 1
        return super().datalist


def _request(pairs: list[tuple[str, str]], form: list[tuple[str, str]] | None = None) -> Any:
    payload = CountingPayload(CombinedMultiDict([MultiDict(pairs), MultiDict(form or [])]))
    client = SimpleNamespace(is_public=False)
    return SimpleNamespace(payload=payload, client=client)


def _outcome(check: Any, *args: Any) -> str | None:
    try:
        check(*args)
    except InvalidRequestError as error:
        return f"{error.error}: {error.description} state={getattr(error, 'state', None)}"
    return None


PKCE_CASES = [
    [],
    [("code_challenge", GOOD), ("code_challenge_method", "S256")],
    [("code_challenge", GOOD), ("code_challenge", GOOD), ("code_challenge_method", "S256")],
    [("code_challenge", "short"), ("code_challenge_method", "S256")],
    [("code_challenge", GOOD), ("code_challenge_method", "S256"), ("code_challenge_method", "S256")],
    [("code_challenge_method", "S256")],
]


@pytest.mark.parametrize("pairs", PKCE_CASES)
def test_the_code_challenge_checks_answer_as_authlibs(pairs: list[tuple[str, str]]) -> None:
    ours = S256CodeChallenge()
    request = _request(pairs)
    CountingPayload.built = 0
    got = _outcome(ours.validate_code_challenge, SimpleNamespace(request=request), "https://x/cb")
    assert CountingPayload.built == 0
    # Authlib's own (once the S256-only rules above it have passed, as ours does).
    expected = _outcome(CodeChallenge.validate_code_challenge, ours, SimpleNamespace(request=request), "https://x/cb")
    assert got == expected


@pytest.mark.parametrize(
    "pairs",
    [
        [("client_id", "a"), ("scope", "openid")],
        [("client_id", "a"), ("client_id", "b"), ("state", "s")],
        [("state", "s1"), ("state", "s2")],
        [("response_type", "code"), ("redirect_uri", "https://x/cb"), ("scope", "a"), ("scope", "b")],
    ],
)
def test_the_repeated_parameter_check_answers_as_authlibs(pairs: list[tuple[str, str]]) -> None:
    request = _request(pairs, form=[("redirect_uri", "https://y/cb")] if len(pairs) == 2 else None)
    CountingPayload.built = 0
    got = _outcome(AuthorizationCodeGrant.validate_no_multiple_request_parameter, request)
    assert CountingPayload.built == 0
    expected = _outcome(AuthorizationEndpointMixin.validate_no_multiple_request_parameter, request)
    assert got == expected
