"""The login page's template: the same bytes, for less work per render.

* the two hidden inputs are written by the template itself, byte for byte as
  WTForms' widget writes them (the widget machinery cost ~60 us a page);
* ``_()`` in a template keeps the answer for a plain string on its catalogue, so
  a page's dozen strings are looked up once per catalogue, not once per render;
  what it answers is what Jinja's own newstyle ``gettext`` answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from babel import support
from babel.messages.pofile import read_po
from flask import Flask, render_template, render_template_string
from flask_babel import force_locale
from wtforms.widgets import HiddenInput

from sso.web import views
from sso.web.forms import LoginForm
from tests.conftest import csrf_from

CATALOGUE = (
    Path(__file__).resolve().parents[1] / "sso" / "web" / "translations" / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
)


@pytest.mark.parametrize("uid", ["", "Abc-123_x", "odd\"<b>&'uid"])
def test_hidden_inputs_are_the_bytes_wtforms_writes(app: Flask, uid: str):
    with app.test_request_context("/login"):
        form = LoginForm(formdata=None)
        form.interaction.data = uid
        page = views._login_html(form, None, None)
        assert str(form.csrf_token) in page
        assert str(form.interaction) in page
        assert page.count('name="csrf_token"') == 1 and page.count('name="interaction"') == 1


def test_login_page_does_not_call_the_wtforms_widgets(client, monkeypatch):
    calls: list[str] = []
    real = HiddenInput.__call__

    def counted(self: Any, field: Any, **kwargs: Any) -> Any:
        calls.append(field.name)
        return real(self, field, **kwargs)

    monkeypatch.setattr(HiddenInput, "__call__", counted)
    page = client.get("/login")
    assert page.status_code == 200 and 'name="csrf_token" type="hidden" value="' in page.text
    assert calls == []


def test_template_strings_are_looked_up_once_per_catalogue(client, monkeypatch):
    asked: list[str] = []
    real = support.Translations.ugettext

    def counted(self: Any, message: str) -> str:
        asked.append(message)
        return real(self, message)  # type: ignore[no-any-return]

    monkeypatch.setattr(support.Translations, "ugettext", counted)
    first = client.get("/login")
    assert "Sign in" in asked
    asked.clear()
    again = client.get("/login")
    assert again.status_code == 200 and "Sign in" not in asked
    # The strings are the ones the first render found (only the CSRF token differs).
    assert again.text.split('name="csrf_token"')[0] == first.text.split('name="csrf_token"')[0]
    english = client.get("/login?lang=en")
    assert "Sign in" in asked and ">Sign in</button>" in english.text


def _msgids() -> list[str]:
    with CATALOGUE.open("rb") as f:
        return [m.id for m in read_po(f) if m.id and isinstance(m.id, str) and "%(" not in m.id]


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_template_gettext_answers_as_jinjas_own(app: Flask, lang: str):
    ids = _msgids()
    assert len(ids) > 20
    source = "{% for s in ids %}[{{ _(s) }}]{% endfor %}"
    jinja_own = "{% for s in ids %}[{{ gettext(s) }}]{% endfor %}"
    with app.test_request_context(f"/login?lang={lang}"):
        for _ in range(2):  # the first render fills what is kept, the second reads it
            assert render_template_string(source, ids=ids) == render_template_string(jinja_own, ids=ids)
        with force_locale("en" if lang == "zh-CN" else "zh_CN"):
            assert render_template_string(source, ids=ids) == render_template_string(jinja_own, ids=ids)
        # Variables, unescaped contexts and a context's own gettext: Jinja's path.
        name = '<b>"Tax" & co</b>'
        assert render_template_string('{{ _("to continue to %(name)s", name=n) }}', n=name) == (
            render_template_string('{{ gettext("to continue to %(name)s", name=n) }}', n=name)
        )
        assert "&lt;b&gt;" in render_template_string('{{ _("to continue to %(name)s", name=n) }}', n=name)
        raw = "{% autoescape false %}{{ _(s) }}{% endautoescape %}"
        assert render_template_string(raw, s="Sign in") == render_template_string(
            "{% autoescape false %}{{ gettext(s) }}{% endautoescape %}", s="Sign in"
        )
        assert render_template_string("{{ _('Sign in') }}", gettext=lambda s: "mine") == "mine"


# ---- the login page from its per-process skeleton ------------------------------------

ODD = "<b>\"odd\" & 'x'</b>"
PAGES = [
    # (path, base_url, uid, username, client name or None, error)
    ("/login", "http://localhost/", "", "", None, None),
    ("/login?interaction=Abc-123_x", "http://localhost/", "Abc-123_x", "alice", "税务服务 Tax portal", None),
    ("/login?lang=en&interaction=u1&foo=a%3Cb&foo=2", "http://localhost/", "u1", ODD, ODD, None),
    (
        "/login?principal=legal&interaction=u%20two",
        "http://localhost/",
        "u two",
        "",
        "Portal",
        "Please fill in both fields.",
    ),
    (
        "/login?ui_locales=en",
        "http://localhost/sso/",
        ODD,
        "13800000000",
        None,
        "The username or password is incorrect.",
    ),
    ("/login?principal=legal&lang=zh-CN", "http://localhost/sso/", "", ODD, None, ODD),
]


def _rendered(app: Flask) -> list[str]:
    from flask import template_rendered

    names: list[str] = []

    def on_render(sender: Any, template: Any, context: Any, **extra: Any) -> None:
        names.append(template.name)

    template_rendered.connect(on_render, app, weak=False)
    return names


@pytest.mark.parametrize(("path", "base_url", "uid", "username", "name", "error"), PAGES)
def test_login_page_from_its_skeleton_is_the_full_render(
    app: Flask, path: str, base_url: str, uid: str, username: str, name: str | None, error: str | None
):
    from types import SimpleNamespace

    client = None if name is None else SimpleNamespace(name=name)
    with app.test_request_context(path, base_url=base_url):
        form = LoginForm(formdata=None)
        form.interaction.data, form.username.data = uid, username
        for _ in range(2):  # the first builds the skeleton, the second reads it
            fast = views._login_html(form, client, error)
            full = render_template("login.html", fields=views._login_fields(form), client=client, error=error)
            assert fast == full
        assert len(app.extensions["sso_login_skeletons"]) == 1
        assert 'name="csrf_token" type="hidden" value="' + form.csrf_token.current_token + '"' in fast


def test_a_marker_in_the_page_text_means_a_full_render(app: Flask):
    from types import SimpleNamespace

    client = SimpleNamespace(name="Tax\x00portal")
    with app.test_request_context("/login?interaction=u1"):
        form = LoginForm(formdata=None)
        form.interaction.data = "u1"
        fast = views._login_html(form, client, None)
        assert fast == render_template("login.html", fields=views._login_fields(form), client=client, error=None)
        assert "Tax\x00portal" in fast and not app.extensions.get("sso_login_skeletons")


def test_login_pages_render_the_template_once_per_language(app: Flask, client):
    rendered = _rendered(app)
    assert client.get("/login").status_code == 200
    assert rendered == ["login.html"]
    for _ in range(3):
        page = client.get("/login")
        assert page.status_code == 200 and "登录" in page.text
    assert client.get("/login?lang=en").status_code == 200
    assert client.get("/login?lang=en&x=1").status_code == 200
    assert rendered == ["login.html"] * 2
    # A failed sign-in re-renders the page with its message: one more skeleton, then none.
    for _ in range(2):
        token = csrf_from(client.get("/login").text)
        answer = client.post("/login", data={"csrf_token": token, "username": "nobody", "password": "wrong"})
        assert answer.status_code == 401 and 'value="nobody"' in answer.text
    assert rendered == ["login.html"] * 3
    app.jinja_env.cache.clear()  # what a reloaded template is: another Template object
    assert client.get("/login").status_code == 200
    assert rendered == ["login.html"] * 4


def test_the_page_language_is_parsed_once_per_process(client, monkeypatch):
    from babel import Locale

    real = Locale.parse.__func__  # type: ignore[attr-defined]
    parsed: list[str] = []

    def counted(cls: Any, identifier: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(identifier, str):
            parsed.append(identifier)
        return real(cls, identifier, *args, **kwargs)

    assert client.get("/login").status_code == 200 and client.get("/login?lang=en").status_code == 200
    monkeypatch.setattr(Locale, "parse", classmethod(counted))
    chinese, english = client.get("/login"), client.get("/login?lang=en")
    assert 'lang="zh-CN"' in chinese.text and 'lang="en"' in english.text
    assert parsed == []
