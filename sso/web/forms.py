"""Flask-WTF forms: every page form carries a CSRF token."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from babel import support
from flask import current_app, g, request, session
from flask_babel import get_locale
from flask_wtf import FlaskForm
from flask_wtf import csrf as flask_wtf_csrf
from flask_wtf.csrf import _FlaskFormCSRF
from werkzeug.datastructures import CombinedMultiDict, ImmutableMultiDict
from wtforms import HiddenField, PasswordField, StringField, ValidationError
from wtforms.csrf.core import CSRFTokenField
from wtforms.i18n import messages_path
from wtforms.validators import DataRequired, Length

from ..crypto import TimedSigner


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


# ---- the login form without WTForms' machinery ------------------------------------------


class _Field:
    """What the login view and page read of a LoginForm field: its ``data``."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data


class _Token(_Field):
    """LoginForm's CSRF field: ``data`` as submitted, ``current_token`` made when first read."""

    __slots__ = ("_token",)

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        self._token: str | None = None

    @property
    def current_token(self) -> str:
        if self._token is None:
            self._token = generate_csrf()
        return self._token


def generate_csrf() -> str:
    """``flask_wtf.csrf.generate_csrf()``: the same secret, the same token, kept on ``g`` alike.

    Flask-WTF builds an itsdangerous serializer and derives its key for every
    token; here the token is signed by a :class:`~sso.crypto.TimedSigner` made
    once per secret key (the same bytes; Flask-WTF's ``validate_csrf`` reads it).
    A missing secret key or field name: Flask-WTF's own answer (its error).
    """
    config = current_app.config
    secret_key = config.get("WTF_CSRF_SECRET_KEY", current_app.secret_key)
    field_name = config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    if not secret_key or not field_name:
        return flask_wtf_csrf.generate_csrf()  # type: ignore[no-any-return]
    if field_name not in g:
        signer = _csrf_signer(secret_key)
        if field_name not in session:
            session[field_name] = hashlib.sha1(os.urandom(64)).hexdigest()  # noqa: S324 - Flask-WTF's secret
        try:
            token = signer.dumps(session[field_name])
        except TypeError:  # as Flask-WTF: a secret that is not JSON is replaced
            session[field_name] = hashlib.sha1(os.urandom(64)).hexdigest()  # noqa: S324 - Flask-WTF's secret
            token = signer.dumps(session[field_name])
        setattr(g, field_name, token)
    return g.get(field_name)  # type: ignore[no-any-return]


_CSRF_SALT = "wtf-csrf-token"  # Flask-WTF's serializer salt
_csrf_signers: dict[Any, TimedSigner] = {}


def _csrf_signer(secret_key: str | bytes) -> TimedSigner:
    """The CSRF token signer for ``secret_key``, made once (an app has one key; tests make many)."""
    signer = _csrf_signers.get(secret_key)
    if signer is None:
        if len(_csrf_signers) >= 8:
            _csrf_signers.clear()
        signer = _csrf_signers[secret_key] = TimedSigner(secret_key, _CSRF_SALT)
    return signer


# LoginForm's fields and their checks: (name, the longest value DataRequired + Length allow).
_LOGIN_CHECKS = (("username", 64), ("password", 256))


class LoginFields:
    """LoginForm as the login view uses it, without building a WTForms form (~80 us a request).

    The same reading of the request (Flask-WTF's formdata: files and form, or the
    form, or a JSON body, when the method submits; each field's first value, None
    when absent), the same checks (``validate_on_submit``: DataRequired and Length
    on username and password, the CSRF token when CSRFProtect has not already
    validated it this request) and the same CSRF token, made only when the page
    shows it.  LoginForm stays for code that wants the WTForms form.
    """

    __slots__ = ("csrf_token", "interaction", "username", "password")

    def __init__(self) -> None:
        formdata = _login_formdata()

        def first(name: str) -> Any:
            if formdata is None or name not in formdata:
                return None
            values = formdata.getlist(name)
            return values[0] if values else None

        token_name = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
        self.csrf_token = _Token(first(token_name))
        self.interaction = _Field(first("interaction"))
        self.username = _Field(first("username"))
        self.password = _Field(first("password"))

    def validate_on_submit(self) -> bool:
        if request.method not in _SUBMIT_METHODS:
            return False
        valid = True
        for name, longest in _LOGIN_CHECKS:
            value = getattr(self, name).data
            if not value or (isinstance(value, str) and not value.strip()):  # DataRequired
                valid = False
            elif len(value) > longest:  # Length(max=...)
                valid = False
        if current_app.config.get("WTF_CSRF_ENABLED", True) and not g.get("csrf_valid", False):
            try:  # as _FlaskFormCSRF.validate_csrf_token, when CSRFProtect did not check this request
                flask_wtf_csrf.validate_csrf(self.csrf_token.data)
            except ValidationError as exc:
                flask_wtf_csrf.logger.info(exc.args[0])
                valid = False
        return valid


_SUBMIT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # flask_wtf.form.SUBMIT_METHODS


def _login_formdata() -> Any:
    """The form data Flask-WTF gives a form built without ``formdata`` (FlaskForm.Meta.wrap_formdata)."""
    if request.method not in _SUBMIT_METHODS:
        return None
    if request.files:
        return CombinedMultiDict((request.files, request.form))
    if request.form:
        return request.form
    if request.is_json:
        return ImmutableMultiDict(request.get_json())
    return None


class ConsentForm(PageForm):
    interaction = HiddenField(validators=[DataRequired(), Length(max=64)])


class LogoutForm(PageForm):
    pass


class ActionForm(PageForm):
    """A button that changes something (revoke, remove): only the CSRF token."""
