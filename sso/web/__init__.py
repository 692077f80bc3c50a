"""Login, consent and account pages; templates; translations (zh-CN default, English)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from babel import Locale
from flask import Flask, Response, g, request
from flask_babel import Babel, get_locale, get_translations
from flask_wtf.csrf import CSRFProtect
from jinja2 import pass_context
from markupsafe import Markup

LOCALES = ("zh_CN", "en")


def request_interaction(uid: str | None) -> dict[str, Any] | None:
    """The stored authorization request ``uid``, read from the store once per request.

    A page and the choice of its language both need it; the second asks costs no
    round trip.  The dict is the page's own (changes it writes back are seen here).
    """
    from ..oidc.authorize import load_interaction

    if not uid:
        return None
    loaded: dict[str, Any] = g.setdefault("sso_interactions", {})
    if uid not in loaded:
        loaded[uid] = load_interaction(uid)
    return loaded[uid]  # type: ignore[no-any-return]


def _interaction_ui_locales() -> list[str]:
    """ui_locales of the authorization request a login or consent page is serving."""
    from ..storage import StoreUnavailable

    # args only: an error page may be rendering for a body that must not be read.
    uid = request.args.get("interaction")
    try:
        interaction = request_interaction(uid)
    except StoreUnavailable:
        # The 503 page for that very outage is rendering: a language hint is not worth a 500.
        return []
    if not interaction:
        return []
    return " ".join(v for k, v in interaction["args"] if k == "ui_locales").split()


def select_locale() -> str:
    """?lang=, the cookie, then ui_locales (OIDC Core §3.1.2.1); zh-CN by default."""
    wanted = request.args.get("lang") or request.cookies.get("lang") or ""
    ui_locales = request.args.get("ui_locales", "").split() or _interaction_ui_locales()
    for tag in [wanted, *ui_locales]:
        tag = tag.replace("-", "_")
        if tag.lower().startswith("en"):
            return "en"
        if tag.lower().startswith("zh"):
            return "zh_CN"
    return "zh_CN"


_PARSED_LOCALES: dict[str, Locale] = {}


def _selected_locale() -> Locale:
    """:func:`select_locale` as the ``Locale`` Flask-Babel would parse it into, parsed once per process.

    Flask-Babel parses the selector's answer on every request (likely subtags, the
    locale data lookup); there are two answers.  It takes a ``Locale`` as it is.
    """
    tag = select_locale()
    locale = _PARSED_LOCALES.get(tag)
    if locale is None:
        locale = _PARSED_LOCALES[tag] = Locale.parse(tag)
    return locale


def _translations() -> Any:
    """``flask_babel.get_translations()``, remembered for the locale it was for.

    Flask-Babel finds the catalogue anew for every ``_()`` in a template (three
    context lookups and the locale's name built each time); a page has a dozen.
    The answer depends only on the request's locale, which Flask-Babel keeps on
    its context (``babel_locale``): it is kept beside it and used while that very
    locale object is current, so ``force_locale`` and ``refresh`` are followed.
    """
    if not g:  # no app context: Flask-Babel's own answer (no translations)
        return get_translations()
    ctx = g.get("_flask_babel")
    remembered = getattr(ctx, "sso_translations", None)
    if remembered is not None and remembered[0] is getattr(ctx, "babel_locale", None):
        return remembered[1]
    translations = get_translations()
    ctx = g.get("_flask_babel")
    locale = getattr(ctx, "babel_locale", None)
    if locale is not None:
        ctx.sso_translations = (locale, translations)
    return translations


def lang_url(lang: str) -> str:
    """This page in another language: the same path and query, ``lang`` replaced."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"]
    return request.path + "?" + urlencode([*args, ("lang", lang)])


@pass_context
def _page_gettext(context: Any, string: str, **variables: Any) -> Any:
    """``_()`` in templates: Jinja's newstyle gettext, with each plain string's answer kept.

    Jinja's ``_`` resolves ``gettext`` in the context, then calls it through two
    more context calls, builds a ``Markup`` and formats it with no variables: ~5 us,
    and a page has a dozen.  A string without variables always gives the same
    ``Markup`` for a given catalogue, so it is kept on that catalogue object (a
    new locale, ``force_locale`` or a refreshed catalogue is another object).
    A template that installs its own ``gettext`` (or a context without autoescape)
    gets Jinja's own path.
    """
    gettext = context.resolve("gettext")
    if variables or gettext is not getattr(context.environment, "sso_gettext", None) or not context.eval_ctx.autoescape:
        return context.call(gettext, string, **variables)
    translations = _translations()
    kept = getattr(translations, "sso_page_strings", None)
    if kept is None:
        kept = {}
        try:
            translations.sso_page_strings = kept
        except AttributeError:  # a catalogue that takes no attributes: nothing kept
            return context.call(gettext, string)
    answer = kept.get(string)
    if answer is None:
        answer = Markup(translations.ugettext(string)) % {}  # noqa: S704 - as Jinja does: the catalogue is ours
        if len(kept) < _KEPT_STRINGS:  # templates hold literals; a bound all the same
            kept[string] = answer
    return answer


_KEPT_STRINGS = 2000


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(Path(__file__).parent / "translations"))
    Babel(app, locale_selector=_selected_locale, default_locale="zh_CN")
    # The same callables Flask-Babel installs, over _translations().
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda s: _translations().ugettext(s),
        ngettext=lambda s, p, n: _translations().ungettext(s, p, n),
        newstyle=True,
        pgettext=lambda c, s: _translations().upgettext(c, s),
        npgettext=lambda c, s, p, n: _translations().unpgettext(c, s, p, n),
    )
    # Jinja's own ``_`` stays for any template whose context brings another gettext.
    app.jinja_env.sso_gettext = app.jinja_env.globals["gettext"]  # type: ignore[attr-defined]
    app.jinja_env.globals["_"] = _page_gettext
    csrf = CSRFProtect()
    csrf.init_app(app)
    # Protocol endpoints are called by programs with their own credentials (or by
    # RPs with cross-site form posts): CSRF tokens apply to our pages only.
    from ..oidc.views import bp as oidc_bp

    csrf.exempt(oidc_bp)

    @app.context_processor
    def _lang_url():  # type: ignore[no-untyped-def]
        return {"lang_url": lang_url, "get_locale": get_locale}

    @app.after_request
    def _remember_lang(response: Response) -> Response:
        # Not .get(): a missing key makes Werkzeug build and catch an HTTP exception, on every request.
        lang = request.args["lang"] if "lang" in request.args else None
        if lang in ("en", "zh-CN"):
            response.set_cookie("lang", lang, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
        return response

    from .account import bp as account_bp
    from .enterprise import bp as enterprise_bp
    from .mfa import bp as mfa_bp
    from .register import bp as register_bp
    from .views import bp

    app.register_blueprint(bp)
    app.register_blueprint(register_bp)
    app.register_blueprint(mfa_bp)
    app.register_blueprint(account_bp)
    from .admin import bp as admin_bp

    app.register_blueprint(admin_bp)
    app.register_blueprint(enterprise_bp)
