"""Protocol routes: discovery, JWKS, authorize, token, userinfo, introspection, revocation, logout."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import audit
from .. import session as browser_session
from ..claims import user_claims
from ..db import db
from ..errors import NO_STORE, error_page, json_error
from ..models import Client
from ..security import CSP
from ..web.forms import LogoutForm
from . import authorize as authorize_flow
from .endpoints import account_of, check_access_token
from .requests import GatewayRequest

bp = Blueprint("oidc", __name__)

FORM_TYPE = "application/x-www-form-urlencoded"


def _gateway():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


@bp.before_request
def _limit_body() -> None:
    # Werkzeug enforces MAX_CONTENT_LENGTH only when a body is parsed; refuse an
    # oversized body up front so every endpoint answers it alike (413).
    limit = request.max_content_length
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()


def _static(body: bytes, etag: str, max_age: int) -> Response:
    tag = etag.strip('"')
    if request.if_none_match.contains(tag):
        response = Response(status=304)
    else:
        response = Response(body, mimetype="application/json")
    response.set_etag(tag)
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.get("/.well-known/openid-configuration")
@bp.get("/.well-known/oauth-authorization-server")
def discovery() -> Response:
    body, etag = current_app.config["SSO_DISCOVERY"]
    return _static(body, etag, 3600)


@bp.get("/jwks")
def jwks() -> Response:
    body, etag = _gateway().keys.jwks_document()
    # Shorter than the key publish lead, so clients see a new key before it signs.
    return _static(body, etag, 300)


def _reject_bad_form() -> Response | None:
    """RFC 6749 §3.2 / §3.1: form-encoded bodies, each parameter at most once."""
    if request.mimetype != FORM_TYPE:
        return json_error(400, "invalid_request", f"The request body must be {FORM_TYPE}.")
    form = request.form
    for key, values in form.lists():
        if len(values) > 1:
            return json_error(400, "invalid_request", f"The '{key}' parameter is repeated.")
    if request.args:
        for key in request.args:
            if key in form:
                return json_error(400, "invalid_request", f"The '{key}' parameter is repeated.")
    return None


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    if request.method == "POST" and request.mimetype != FORM_TYPE:
        return error_page(400, "invalid_request", f"The request body must be {FORM_TYPE}.")
    return authorize_flow.authorize(GatewayRequest.from_flask())


@bp.get("/authorize/resume")
def authorize_resume() -> Response:
    uid = request.args.get("interaction", "")
    interaction = authorize_flow.load_interaction(uid)
    if interaction is None:
        return error_page(400, "invalid_request", "This sign-in request has expired. Start again from the portal.")
    oauth_request = GatewayRequest.from_stored(interaction["args"])
    return authorize_flow.authorize(oauth_request, interaction_id=uid)


@bp.post("/token")
def token() -> Response:
    bad = _reject_bad_form()
    if bad is not None:
        return bad
    if not request.form.get("grant_type"):
        # RFC 6749 §5.2: a missing parameter is invalid_request, not unsupported_grant_type.
        return json_error(400, "invalid_request", "The 'grant_type' parameter is missing.")
    return _gateway().server.create_token_response()  # type: ignore[no-any-return]


@bp.post("/introspect")
def introspect() -> Response:
    bad = _reject_bad_form()
    if bad is not None:
        return bad
    return _gateway().server.create_endpoint_response("introspection")  # type: ignore[no-any-return]


@bp.post("/revoke")
def revoke() -> Response:
    bad = _reject_bad_form()
    if bad is not None:
        return bad
    return _gateway().server.create_endpoint_response("revocation")  # type: ignore[no-any-return]


def _bearer_error(status: int, error: str, description: str) -> Response:
    # RFC 6750 §3: the challenge names the error; no error code when no token was sent.
    realm = 'Bearer realm="sso"'
    challenge = realm if not error else f'{realm}, error="{error}", error_description="{description}"'
    body: dict[str, Any] = {"error": error or "invalid_token", "error_description": description}
    response = jsonify(body)
    response.status_code = status
    response.headers["WWW-Authenticate"] = challenge
    response.headers.update(NO_STORE)
    return response


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    form = request.form if request.method == "POST" and request.mimetype == FORM_TYPE else None
    return userinfo_response(request.headers.get("Authorization", ""), form)


def userinfo_response(header: str, form: Any) -> Response:
    """OIDC Core §5.3: the claims for a bearer token from the header or, in a POST, the form."""
    token = None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        if not value.strip():
            # RFC 6750 §3.1: a malformed request is invalid_request, 400.
            return _bearer_error(400, "invalid_request", "Malformed Authorization header.")
        token = value.strip()
    # Any other scheme carries no bearer token: answered as "no token" (RFC 6750 §3.1).
    if form is not None and "access_token" in form:
        # RFC 6750 §2.2 form parameter; more than one method is an error (§2).
        if token is not None or len(form.getlist("access_token")) > 1:
            return _bearer_error(400, "invalid_request", "Use exactly one way to send the token.")
        token = form["access_token"]
    if token is None:
        return _bearer_error(401, "", "An access token is required.")
    active = check_access_token(token)
    if active is None or active.grant is None:
        return _bearer_error(401, "invalid_token", "The access token is invalid or expired.")
    claims = active.claims
    scopes = str(claims.get("scope", "")).split()
    if "openid" not in scopes:
        return _bearer_error(403, "insufficient_scope", "The token lacks the openid scope.")
    # Disabled portals are None here: their unexpired tokens stop working (within
    # client_cache_ttl of the change, sso.oidc.server.ClientCache).
    client = _gateway().server.query_client(claims["client_id"])
    grant = active.grant  # what check_access_token found (cached or read): no query
    account = account_of(grant.account_id) if grant.account_id else None  # cached like the grant
    if client is None or client.disabled or account is None or account.status != "active":
        return _bearer_error(401, "invalid_token", "The access token is invalid or expired.")
    response = jsonify(user_claims(account, client, scopes, grant.acting))
    response.headers.update(NO_STORE)
    return response


@bp.route("/logout", methods=["GET", "POST"])
def end_session() -> Response:
    server = _gateway().server
    form = LogoutForm()
    try:
        logout_request = server.validate_endpoint_request("end_session")
    except OAuth2Error as error:
        # RP-Initiated Logout §4: on error, never redirect.
        return error_page(400, error.error, error.get_error_description() or error.error)
    current = browser_session.current()
    confirmed = request.method == "POST" and form.validate_on_submit()
    if logout_request.needs_confirmation and not confirmed:
        if current is None:
            return Response(render_template("logged_out.html"), mimetype="text/html")
        return Response(render_template("logout_confirm.html", form=form), mimetype="text/html")
    frontchannel = _frontchannel_uris(current) if current is not None else []
    response: Response
    if logout_request.redirect_uri and not frontchannel:
        response = redirect(logout_request.redirect_uri, code=302)
    else:
        # Front-Channel Logout 1.0 §2: one iframe per portal, then continue.
        body = render_template("logged_out.html", frontchannel=frontchannel, continue_to=logout_request.redirect_uri)
        response = Response(body, mimetype="text/html")
        if frontchannel:
            origins = " ".join(sorted({_origin(uri) for uri in frontchannel}))
            response.headers["Content-Security-Policy"] = CSP.replace(
                "frame-ancestors 'none'", f"frame-src {origins}; frame-ancestors 'none'"
            )
    ended = browser_session.end(response)
    if ended is not None:
        audit.record("logout", actor=ended.account_id, sid=ended.sid)
    response.headers["Cache-Control"] = "no-store"
    return response


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def _frontchannel_uris(session: browser_session.BrowserSession) -> list[str]:
    """frontchannel_logout_uri of each portal in the session, with iss and sid (§2)."""
    uris = []
    issuer = _gateway().settings.issuer
    for client_id in session.clients:
        client = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one_or_none()
        if client is not None and client.frontchannel_logout_uri and not client.disabled:
            uris.append(add_params_to_uri(client.frontchannel_logout_uri, {"iss": issuer, "sid": session.sid}))
    return uris
