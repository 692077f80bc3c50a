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

from sso.web.forms import LoginForm

CATALOGUE = (
    Path(__file__).resolve().parents[1] / "sso" / "web" / "translations" / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
)


@pytest.mark.parametrize("uid", ["", "Abc-123_x", "odd\"<b>&'uid"])
def test_hidden_inputs_are_the_bytes_wtforms_writes(app: Flask, uid: str):
    with app.test_request_context("/login"):
        form = LoginForm(formdata=None)
        form.interaction.data = uid
        page = render_template("login.html", form=form, client=None, error=None)
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
