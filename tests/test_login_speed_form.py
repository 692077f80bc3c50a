"""The login view reads its form without building a WTForms form (sso.web.forms.LoginFields).

LoginFields must read, check and sign exactly as LoginForm (Flask-WTF) does: the
same field values for every shape of request, the same ``validate_on_submit``
answer (DataRequired + Length on username and password, the CSRF token when
CSRFProtect did not check it), the same CSRF token.  Each case here is asked of
both, in the same request.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask, g, session
from flask_wtf import csrf as flask_wtf_csrf
from wtforms import Form

from sso.web.forms import LoginFields, LoginForm

from .conftest import PASSWORD, USERNAME, csrf_from
from .test_login_csrf_token import signed  # noqa: F401 - the fixture counting the login form's tokens too

TOKEN = "<token>"  # replaced by a valid token of the request's session
FILE = "<file>"  # replaced by an uploaded file (a new one per request)

CASES: list[tuple[str, dict[str, Any]]] = [
    ("get", {"method": "GET"}),
    ("get-with-query", {"method": "GET", "query_string": "username=x&interaction=u"}),
    ("ok", {"data": {"csrf_token": TOKEN, "interaction": "u1", "username": "zhang", "password": "pw"}}),
    ("no-interaction", {"data": {"csrf_token": TOKEN, "username": "zhang", "password": "pw"}}),
    ("empty-username", {"data": {"csrf_token": TOKEN, "username": "", "password": "pw"}}),
    ("blank-username", {"data": {"csrf_token": TOKEN, "username": " \t ", "password": "pw"}}),
    ("blank-password", {"data": {"csrf_token": TOKEN, "username": "zhang", "password": "   "}}),
    ("no-password", {"data": {"csrf_token": TOKEN, "username": "zhang"}}),
    ("nothing", {"data": {}}),
    ("username-64", {"data": {"csrf_token": TOKEN, "username": "u" * 64, "password": "pw"}}),
    ("username-65", {"data": {"csrf_token": TOKEN, "username": "u" * 65, "password": "pw"}}),
    ("password-256", {"data": {"csrf_token": TOKEN, "username": "zhang", "password": "p" * 256}}),
    ("password-257", {"data": {"csrf_token": TOKEN, "username": "zhang", "password": "p" * 257}}),
    ("unicode", {"data": {"csrf_token": TOKEN, "username": "张三", "password": "密码"}}),
    ("repeated", {"data": {"csrf_token": TOKEN, "username": ["first", "second"], "password": ["", "pw"]}}),
    ("no-token", {"data": {"username": "zhang", "password": "pw"}}),
    ("bad-token", {"data": {"csrf_token": "forged", "username": "zhang", "password": "pw"}}),
    (
        "multipart-file",
        {
            "data": {"csrf_token": TOKEN, "username": "zhang", "password": "pw", "other": FILE},
            "content_type": "multipart/form-data",
        },
    ),
    (
        "file-as-username",
        {"data": {"csrf_token": TOKEN, "username": FILE, "password": "pw"}, "content_type": "multipart/form-data"},
    ),
    (
        "json",
        {"json_body": {"csrf_token": TOKEN, "interaction": "u2", "username": "zhang", "password": "pw"}},
    ),
    ("json-empty-username", {"json_body": {"csrf_token": TOKEN, "username": "", "password": "pw"}}),
    ("json-null", {"json_body": {"csrf_token": TOKEN, "username": None, "password": "pw"}}),
    ("json-number", {"json_body": {"csrf_token": TOKEN, "username": 12345, "password": "pw"}}),
    ("json-zero", {"json_body": {"csrf_token": TOKEN, "username": 0, "password": "pw"}}),
    ("put", {"method": "PUT", "data": {"csrf_token": TOKEN, "username": "zhang", "password": "pw"}}),
]


def _outcome(make: Any) -> tuple[Any, ...]:
    try:
        form = make()
        fields = (form.csrf_token, form.interaction, form.username, form.password)
        # An uploaded file is compared by what it is (each request has its own object).
        values = tuple(f.data if f.data is None or isinstance(f.data, str | int) else repr(f.data) for f in fields)
    except Exception as exc:  # noqa: BLE001 - the kind of failure is what is compared
        return ("raised on build", type(exc))
    try:
        return (*values, form.validate_on_submit())
    except Exception as exc:  # noqa: BLE001
        return (*values, "raised on validate", type(exc))


def _request(app: Flask, spec: dict[str, Any], token: str, raw: str) -> Any:
    spec = dict(spec)
    method = spec.pop("method", "POST")
    data = spec.pop("data", None)
    body = spec.pop("json_body", None)
    if data is not None:
        data = {k: (token if v == TOKEN else (io.BytesIO(b"x"), "x.txt") if v == FILE else v) for k, v in data.items()}
    kwargs: dict[str, Any] = {"method": method, **spec}
    if body is not None:
        body = {k: (token if v == TOKEN else v) for k, v in body.items()}
        kwargs.update(data=json.dumps(body), content_type="application/json")
    elif data is not None:
        kwargs["data"] = data
    ctx = app.test_request_context("/login", **kwargs)
    ctx.push()
    session["csrf_token"] = raw  # the browser's CSRF secret, as its cookie would bring it
    return ctx


@pytest.mark.parametrize("checked_by_csrfprotect", [True, False], ids=["csrfprotect-checked", "unchecked"])
@pytest.mark.parametrize(("name", "spec"), CASES, ids=[c[0] for c in CASES])
def test_login_fields_read_and_check_as_login_form(
    app: Flask, name: str, spec: dict[str, Any], checked_by_csrfprotect: bool
):
    with app.app_context(), app.test_request_context("/login"):
        token = flask_wtf_csrf.generate_csrf()
        raw = session["csrf_token"]
    answers = []
    for make in (LoginForm, LoginFields):
        with app.app_context():
            ctx = _request(app, spec, token, raw)
            try:
                if checked_by_csrfprotect:
                    g.csrf_valid = True
                answers.append(_outcome(make))
            finally:
                ctx.pop()
    assert answers[0] == answers[1]
    if name == "ok":
        assert answers[1][-1] is True
    if name in ("username-65", "password-257", "blank-username", "no-password"):
        assert answers[1][-1] is False
    if name in ("bad-token", "no-token"):
        assert answers[1][-1] is (True if checked_by_csrfprotect else False)


def test_the_token_is_the_one_flask_wtf_makes_and_made_once(app: Flask, signed: list[int]):  # noqa: F811
    made = signed
    with app.app_context(), app.test_request_context("/login"):
        fields = LoginFields()
        assert made == []  # not made until shown
        token = fields.csrf_token.current_token
        assert token == fields.csrf_token.current_token == LoginForm(formdata=None).csrf_token.current_token
        assert len(made) == 2  # one each (Flask-WTF keeps the request's token on g: the same)
        flask_wtf_csrf.validate_csrf(token)


def test_the_login_view_builds_no_wtforms_form(client, account, monkeypatch: pytest.MonkeyPatch):
    built: list[str] = []
    real = Form.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(type(self).__name__)
        real(self, *args, **kwargs)

    monkeypatch.setattr(Form, "__init__", counted)
    page = client.get("/login")
    assert page.status_code == 200
    token = csrf_from(page.text)
    assert client.post("/login", data={"csrf_token": token, "username": "", "password": "x"}).status_code == 400
    failed = client.post("/login", data={"csrf_token": token, "username": USERNAME, "password": "wrong"})
    assert failed.status_code == 401
    ok = client.post("/login", data={"csrf_token": csrf_from(failed.text), "username": USERNAME, "password": PASSWORD})
    assert ok.status_code == 302
    assert built == []


def test_a_forged_token_is_still_refused_before_the_view(client, account):
    client.get("/login")
    answer = client.post("/login", data={"csrf_token": "forged", "username": USERNAME, "password": PASSWORD})
    assert answer.status_code == 400
    assert "Location" not in answer.headers


UIDS = [None, "", "Abc-123_x", "odd\"<b>&'uid", "a b+c/d?e=f#g&h", "中文-ü", "!$'()*,/:;?@[]~%"]


@pytest.mark.parametrize("script_root", ["", "/sso"])
@pytest.mark.parametrize("uid", UIDS, ids=[repr(u) for u in UIDS])
def test_the_page_links_are_the_ones_url_for_builds(app: Flask, uid: str | None, script_root: str):
    from flask import url_for

    from sso.web import views

    for _ in range(2):  # the paths asked of url_for, then kept
        with app.app_context(), app.test_request_context("/login", base_url="http://localhost" + script_root):
            assert views._login_hrefs(uid) == (
                url_for("web.login", interaction=uid or None),
                url_for("web.login", interaction=uid or None, principal="legal"),
                url_for("register.start", interaction=uid) if uid else url_for("register.start"),
            )
            assert views._login_hrefs(uid)[0].startswith(script_root + "/login")
