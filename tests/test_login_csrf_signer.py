"""The login page's CSRF token is signed by a TimedSigner made once per secret key.

Flask-WTF's ``generate_csrf`` builds an itsdangerous serializer and derives its
HMAC key for every token.  ``sso.web.forms.generate_csrf`` keeps the same secret
(in the session), the same token on ``g`` and the same bytes, with the signer's
key derived once: ``sso.crypto.TimedSigner`` writes what itsdangerous writes, which
Flask-WTF's ``validate_csrf`` (CSRFProtect) reads back.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any
from unittest import mock

import itsdangerous.timed
import pytest
from flask import Flask, g, session
from flask.sessions import session_json_serializer
from flask_wtf import csrf as flask_wtf_csrf
from itsdangerous import URLSafeTimedSerializer

from sso.crypto import TimedSigner
from sso.web import forms

from .conftest import PASSWORD, USERNAME, csrf_from

VALUES: list[Any] = [
    hashlib.sha1(b"a CSRF secret").hexdigest(),  # what Flask-WTF keeps in the session
    "a" * 120,  # compresses: the '.'-prefixed zlib payload
    "中文 and ascii",
    {"csrf_token": "ab" * 20},
    {"list": [1, 2, 3] * 40, "nested": {"k": None}},
    "",
]
STAMPS = [0, 1, 255, 256, 65_535, 1_800_000_000, 2**40 + 7]


@pytest.mark.parametrize("secret_key", [os.urandom(32), "a text key"], ids=["bytes-key", "text-key"])
def test_the_bytes_are_itsdangerous_s(secret_key: Any):
    cases = [
        # Flask-WTF's token serializer
        (URLSafeTimedSerializer(secret_key, salt="wtf-csrf-token"), TimedSigner(secret_key, "wtf-csrf-token")),
        # Flask's session cookie serializer (the newest key signs)
        (
            URLSafeTimedSerializer(
                [b"an older key", secret_key],
                salt="cookie-session",
                serializer=session_json_serializer,
                signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
            ),
            TimedSigner(secret_key, b"cookie-session", key_derivation="hmac", dumps=session_json_serializer.dumps),
        ),
    ]
    for reference, signer in cases:
        for value in VALUES:
            for stamp in STAMPS:
                with mock.patch.object(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda _self: stamp):
                    expected = reference.dumps(value)
                assert signer.dumps(value, now=stamp) == expected
            assert reference.loads(signer.dumps(value)) == value


def test_an_unknown_key_derivation_is_refused():
    with pytest.raises(ValueError, match="key derivation"):
        TimedSigner(b"key", "salt", key_derivation="concat")


def test_the_token_is_flask_wtf_s_and_kept_on_g(app: Flask):
    with app.test_request_context("/login"):
        token = forms.generate_csrf()
        assert session["csrf_token"] and g.csrf_token == token
        assert forms.generate_csrf() == flask_wtf_csrf.generate_csrf() == token  # one token per request
        flask_wtf_csrf.validate_csrf(token)
        reference = URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token")
        assert reference.loads(token) == session["csrf_token"]
    with app.test_request_context("/login"):
        first = flask_wtf_csrf.generate_csrf()
        assert forms.generate_csrf() == first  # Flask-WTF's token on g is the request's token


def test_a_configured_csrf_secret_and_field_name_are_followed(app: Flask, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(app.config, "WTF_CSRF_SECRET_KEY", b"a separate CSRF key")
    monkeypatch.setitem(app.config, "WTF_CSRF_FIELD_NAME", "other_token")
    with app.test_request_context("/login"):
        token = forms.generate_csrf()
        assert g.other_token == token and "other_token" in session and "csrf_token" not in session
        flask_wtf_csrf.validate_csrf(token)
        assert (
            URLSafeTimedSerializer(b"a separate CSRF key", salt="wtf-csrf-token").loads(token) == session["other_token"]
        )


def test_without_a_secret_key_flask_wtf_answers(app: Flask, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(app.config, "WTF_CSRF_SECRET_KEY", None)
    with app.test_request_context("/login"), pytest.raises(RuntimeError, match="secret key is required"):
        forms.generate_csrf()


def test_a_secret_that_is_not_json_is_replaced_as_flask_wtf_does(app: Flask):
    with app.test_request_context("/login"):
        session["csrf_token"] = {1, 2}  # cannot be serialised
        token = forms.generate_csrf()
        assert isinstance(session["csrf_token"], str) and len(session["csrf_token"]) == 40
        flask_wtf_csrf.validate_csrf(token)


def test_the_signer_is_made_once_per_key(client, account, monkeypatch: pytest.MonkeyPatch):
    made: list[Any] = []
    real = forms.TimedSigner

    def counted(*args: Any, **kwargs: Any) -> TimedSigner:
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(forms, "TimedSigner", counted)
    monkeypatch.setattr(forms, "_csrf_signers", {})
    flask_wtf_made: list[int] = []
    real_generate = flask_wtf_csrf.generate_csrf
    monkeypatch.setattr(flask_wtf_csrf, "generate_csrf", lambda *a, **k: flask_wtf_made.append(1) or real_generate())
    tokens = [csrf_from(client.get("/login").text) for _ in range(3)]
    assert len(made) == 1 and flask_wtf_made == []  # one signer for the key; Flask-WTF's path not taken
    for token in tokens:  # each one CSRFProtect accepts
        answer = client.post("/login", data={"csrf_token": token, "username": USERNAME, "password": PASSWORD})
        assert answer.status_code == 302
