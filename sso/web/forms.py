"""Flask-WTF forms: every page form carries a CSRF token."""

from __future__ import annotations

from typing import Any

from babel import support
from flask import current_app
from flask_babel import get_locale
from flask_wtf import FlaskForm
from flask_wtf.csrf import _FlaskFormCSRF
from wtforms import HiddenField, PasswordField, StringField
from wtforms.csrf.core import CSRFTokenField
from wtforms.i18n import messages_path
from wtforms.validators import DataRequired, Length


class _WTFormsTranslations:
    """WTForms' own messages (validators, default labels) in the page's language.

    Flask-WTF reads WTForms' catalogue from disk on every request that builds a
    form (its ``_get_translations``); the catalogue never changes while the
    process runs, so each locale's is read once and kept.  Same files, same
    domain, same locale as Flask-WTF would pick: the same strings.
    """

    _catalogues: dict[str, Any] = {}

    def _catalogue(self) -> Any:
        locale = get_locale()
        if locale is None:  # no request: WTForms' English, as Flask-WTF does
            return None
        key = str(locale)
        catalogue = self._catalogues.get(key)
        if catalogue is None:
            catalogue = support.Translations.load(messages_path(), [locale], domain="wtforms")
            self._catalogues[key] = catalogue
        return catalogue

    def gettext(self, string: str) -> str:
        catalogue = self._catalogue()
        return string if catalogue is None else catalogue.ugettext(string)  # type: ignore[no-any-return]

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        catalogue = self._catalogue()
        if catalogue is None:
            return singular if n == 1 else plural
        return catalogue.ungettext(singular, plural, n)  # type: ignore[no-any-return]


_TRANSLATIONS = _WTFormsTranslations()


class PageForm(FlaskForm):
    """A page form: Flask-WTF's CSRF token, WTForms' catalogue cached per locale per process."""

    class Meta:
        def get_translations(self, form: Any) -> Any:
            # Where Flask-WTF would give its per-request loader (WTF_I18N_ENABLED): ours.
            if not current_app.config.get("WTF_I18N_ENABLED", True):
                return super().get_translations(form)  # type: ignore[misc]
            return _TRANSLATIONS


class _TokenWhenRead(CSRFTokenField):
    """WTForms' CSRF field, its token made when first read (to render it), not when the form is built.

    A sign-in that succeeds redirects without rendering the form: signing a token
    it never shows cost ~50 us.  Read in the same request, the token is the one
    Flask-WTF would have made (``generate_csrf``: same session, same ``g``).
    """

    _token: str | None = None

    @property  # type: ignore[override]
    def current_token(self) -> str:
        if self._token is None:
            self._token = self.csrf_impl.generate_csrf_token(self)
        return self._token

    @current_token.setter
    def current_token(self, value: str) -> None:
        self._token = value

    def process(self, *args: Any, **kwargs: Any) -> None:
        super(CSRFTokenField, self).process(*args, **kwargs)  # CSRFTokenField's, without the token


class _TokenWhenReadCSRF(_FlaskFormCSRF):  # type: ignore[misc]
    field_class = _TokenWhenRead


class LoginForm(PageForm):
    class Meta:
        csrf_class = _TokenWhenReadCSRF

    # A label of its own (never shown: the template writes the hidden input): without
    # one WTForms translates a default label while building the form, which made every
    # sign-in POST choose the page language (a redirect has none) for nothing.  The
    # same text: WTForms' catalogues do not translate it.
    interaction = HiddenField("Interaction")
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class ConsentForm(PageForm):
    interaction = HiddenField(validators=[DataRequired(), Length(max=64)])


class LogoutForm(PageForm):
    pass


class ActionForm(PageForm):
    """A button that changes something (revoke, remove): only the CSRF token."""
