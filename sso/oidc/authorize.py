"""The authorization endpoint: validate, decide (login? consent?), issue a code.

An authorization request that needs the user is saved as an *interaction* in the
short-lived store; the login and consent pages carry only its id and resume it.
Errors found before the redirect URI is validated are shown as a page, never
redirected (RFC 6749 §4.1.2.1); later errors go back with ``state`` and ``iss``.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnsupportedResponseTypeError
from authlib.oidc.core.errors import ConsentRequiredError, InteractionRequiredError, LoginRequiredError
from flask import Response, current_app, g, has_request_context, redirect, url_for

from .. import claims_request, consent
from .. import session as browser_session
from ..crypto import new_token
from ..db import close_own_connection, db, open_own_connection, own_connection
from ..db import rollback as rollback_unit
from ..errors import error_page, printable
from ..models import Client
from .requests import GatewayRequest
from .tokens import Authorization

log = logging.getLogger("sso.authorize")

INTERACTION = "interaction"
# What prompt=none answers instead of showing each page (OIDC Core §3.1.2.6).
PROMPT_NONE_ERRORS = {"login": LoginRequiredError, "consent": ConsentRequiredError}
INTERACTION_TTL = 1800
MAX_PARAM_LENGTH = 2048
MAX_AGE = re.compile(r"[0-9]{1,10}")


def _gateway():  # type: ignore[no-untyped-def]
    return current_app.extensions["sso"]


# ---- interactions ----------------------------------------------------------------


def save_interaction(oauth_request: GatewayRequest, prompt: consent.Prompt) -> str:
    uid = new_token(16)
    data = {
        "args": [[k, v] for k, v in oauth_request.args.items(multi=True)],
        "created": int(time.time()),
        "prompt": prompt.kind,
        "reason": prompt.reason,
        "consented": False,
    }
    _gateway().store.put(INTERACTION, uid, data, INTERACTION_TTL)
    return uid


# g attribute: the interactions this request read, by id (a resume reads its own twice:
# the view, then the endpoint), kept up to date by this module's writes.
_LOADED = "sso_loaded_interactions"


# The same, for a request sso.oidc.hop serves (it has no request context): set by it.
LANE_LOADED: ContextVar[dict[str, dict[str, Any] | None] | None] = ContextVar("sso_lane_interactions", default=None)


def _loaded() -> dict[str, dict[str, Any] | None] | None:
    return g.setdefault(_LOADED, {}) if has_request_context() else LANE_LOADED.get()  # type: ignore[no-any-return]


def load_interaction(uid: str | None) -> dict[str, Any] | None:
    """The stored authorization request ``uid``: read from the store once per request."""
    if not uid or len(uid) > 64:
        return None
    loaded = _loaded()
    if loaded is not None and uid in loaded:
        return loaded[uid]
    interaction: dict[str, Any] | None = _gateway().store.get(INTERACTION, uid)
    if loaded is not None:
        loaded[uid] = interaction
    return interaction


def _drop_interaction(uid: str) -> None:
    _gateway().store.delete(INTERACTION, uid)
    loaded = _loaded()
    if loaded is not None:
        loaded[uid] = None


def interaction_client(interaction: dict[str, Any] | None) -> Client | None:
    """The portal a stored authorization request is for (for page headings)."""
    client_id = next((v for k, v in (interaction or {}).get("args", []) if k == "client_id"), None)
    if client_id is None:
        return None
    return db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one_or_none()  # type: ignore[no-any-return]


def update_interaction(uid: str, data: dict[str, Any]) -> None:
    _gateway().store.put(INTERACTION, uid, data, INTERACTION_TTL)
    loaded = _loaded()
    if loaded is not None:
        loaded[uid] = data


# ---- errors -------------------------------------------------------------------------


def error_response(error: OAuth2Error, state: str | None) -> Response:
    redirect_uri = getattr(error, "redirect_uri", None)
    if not redirect_uri:
        return error_page(400, error.error, error.get_error_description() or error.error)
    params = [("error", error.error)]
    description = error.get_error_description()
    if description:
        params.append(("error_description", description))
    if state:
        params.append(("state", state))
    params.append(("iss", _gateway().settings.issuer))  # RFC 9207 §2
    return redirect(add_params_to_uri(redirect_uri, params), code=302)


def _no_page(status: int, error: str, description: str) -> None:
    """What the hop's lane answers in place of an error page: nothing (Flask makes the page)."""
    return None


# ---- the endpoint -------------------------------------------------------------------


def _end_user(
    session: browser_session.BrowserSession | None, client_id: str | None
) -> tuple[Authorization | None, str, set[str] | None]:
    """The signed-in end user, its account's assurance, and the scopes remembered for
    ``client_id`` (one query; no ORM object: ``Authorization.account`` loads it if asked).

    None when the session's account is gone or no longer active (as for the pages,
    sso.session.signed_in): such a session is no session here.
    """
    if session is None:
        return None, "self-asserted", None
    if browser_session.sync_due(session) and consent.reads_at_once():
        # The record's due sync rides on the read: one autocommit statement (see _answer).
        standing, remembered, synced = consent.standing_with_sync(session, client_id)
        if not synced and standing is not None and standing.status == "active":
            # Its record is missing, ended, or names another handle: the sync as it
            # was, on a connection of the request's own, in one transaction with the
            # store write (closed by _answer); the Session's when none can be opened.
            open_own_connection()
    else:
        standing, remembered = consent.standing_with_consent(session.account_id, client_id)
    if standing is None or standing.status != "active":
        return None, "self-asserted", None
    return (
        Authorization(
            account_id=session.account_id,
            grant_id="",
            sid=session.sid,
            auth_time=session.auth_time,
            acr=session.acr,
            amr=list(session.amr),
            acting=session.acting,
        ),
        standing.assurance,
        remembered,
    )


def _interaction_needed(
    oauth_request: GatewayRequest,
    prompt: consent.Prompt,
    interaction: dict[str, Any] | None,
    interaction_id: str | None,
    client: Client,
    redirect_uri: str,
    state: str | None,
) -> Response:
    """The page ``prompt`` asks for (the request saved as an interaction), or its error for prompt=none."""
    log.info("authorize client=%s needs %s (%s)", client.client_id, prompt.kind, prompt.reason)
    if "none" in str(oauth_request.payload.data.get("prompt") or "").split():
        # OIDC Core §3.1.2.6: prompt=none never shows a page.
        cls = PROMPT_NONE_ERRORS.get(prompt.kind, InteractionRequiredError)
        return error_response(cls(redirect_uri=redirect_uri), state)
    uid = interaction_id if interaction and interaction_id else save_interaction(oauth_request, prompt)
    if interaction:
        interaction.update(prompt=prompt.kind, reason=prompt.reason)
        update_interaction(uid, interaction)
    return redirect(url_for(consent.PROMPT_PAGES[prompt.kind], interaction=uid))


def _check_client_and_redirect_uri(
    oauth_request: GatewayRequest, datalist: dict[str, list[str]], lane: bool = False
) -> Response | str | None:
    """The checks whose failure must never redirect (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6).

    Done here, before Authlib, so that no value the client sent ends up in an
    Authlib error text (which refuses non-ASCII with a ValueError).  Returns the
    validated redirect URI, or the error page (``lane``: None, no page made).
    ``datalist``: the request's parameters, each with all its values.
    """
    page = _no_page if lane else error_page
    # A repeated 'state' cannot be echoed "exactly as received" (RFC 6749 §4.1.2.1).
    for key in ("client_id", "redirect_uri", "state"):
        if len(datalist.get(key, [])) > 1:
            return page(400, "invalid_request", f"The '{key}' parameter is repeated.")
    client_id = oauth_request.payload.client_id
    if not client_id:
        return page(400, "invalid_request", "The 'client_id' parameter is missing.")
    client = _gateway().server.query_client(client_id)
    if client is None:
        return page(400, "invalid_client", "The client does not exist on this server.")
    redirect_uri = oauth_request.payload.redirect_uri
    if not redirect_uri:
        return page(400, "invalid_request", "The 'redirect_uri' parameter is missing.")
    if not client.check_redirect_uri(redirect_uri):
        return page(400, "invalid_request", "The 'redirect_uri' is not registered for this client.")
    return redirect_uri  # type: ignore[no-any-return]


def _check_parameters(oauth_request: GatewayRequest, redirect_uri: str, datalist: dict[str, list[str]]) -> None:
    """What Authlib leaves to us, checked once the redirect URI is known to be safe."""
    data = oauth_request.payload.data
    for key, values in datalist.items():
        if len(values) > 1:
            # RFC 6749 §3.1: parameters MUST NOT be included more than once.
            raise InvalidRequestError(f"The '{printable(key, 64)}' parameter is repeated.", redirect_uri=redirect_uri)
        if len(key) > MAX_PARAM_LENGTH or any(len(v) > MAX_PARAM_LENGTH for v in values):
            raise InvalidRequestError(f"The '{printable(key, 64)}' parameter is too long.", redirect_uri=redirect_uri)
    response_type = data.get("response_type")
    if not response_type:
        raise InvalidRequestError("The 'response_type' parameter is missing.", redirect_uri=redirect_uri)
    if response_type != "code":
        raise UnsupportedResponseTypeError(printable(response_type, 64), redirect_uri=redirect_uri)
    if data.get("request") is not None:
        err = OAuth2Error("Request objects are not supported.", redirect_uri=redirect_uri)
        err.error = "request_not_supported"
        raise err
    if data.get("request_uri") is not None:
        err = OAuth2Error("'request_uri' is not supported.", redirect_uri=redirect_uri)
        err.error = "request_uri_not_supported"
        raise err
    mode = data.get("response_mode")
    if mode is not None and mode != "query":
        raise InvalidRequestError("Only response_mode=query is supported.", redirect_uri=redirect_uri)
    try:
        claims_request.parse(data.get("claims"))
    except claims_request.InvalidClaimsRequest as exc:
        raise InvalidRequestError(str(exc), redirect_uri=redirect_uri) from None
    max_age = data.get("max_age")
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if max_age is not None and not MAX_AGE.fullmatch(max_age):
        raise InvalidRequestError("'max_age' must be a non-negative integer.", redirect_uri=redirect_uri)
    scopes = (oauth_request.payload.scope or "").split()
    if "openid" not in scopes:
        # This gateway is an OpenID provider: every authorization is an authentication.
        raise InvalidRequestError("The 'openid' scope is required.", redirect_uri=redirect_uri)


def authorize(oauth_request: GatewayRequest, interaction_id: str | None = None) -> Response:
    """The answer to an authorization request (``interaction_id``: resumed after a page)."""
    response = _answer(oauth_request, interaction_id, lane=False)
    assert response is not None  # every outcome has an answer outside the lane
    return response


def code_or_none(oauth_request: GatewayRequest, interaction_id: str | None = None) -> Response | None:
    """For sso.oidc.hop, outside Flask's request cycle: the answer when it is a code for a
    signed-in browser that needs no page (the SSO hop); for anything else None, with
    nothing written, and the caller hands the request to Flask."""
    return _answer(oauth_request, interaction_id, lane=True)


def _answer(oauth_request: GatewayRequest, interaction_id: str | None, lane: bool) -> Response | None:
    # The session's sliding expiry (and a stale record's sync) is written once, at the
    # end: with the portal it joins when a code is issued, or on its own (settle).
    session = browser_session.current(defer=True)
    if lane and session is None:
        return None
    # On PostgreSQL + psycopg the hop's one read (the account with its consent) runs by
    # itself in autocommit (consent.standing_with_consent: one round trip), and when
    # the session's record is due its sync, the record's UPDATE rides on it: one
    # statement, committed by itself (consent.standing_with_sync), before the store's
    # write-back, not after it as _sync_record does.  That is safe here because:
    # - the UPDATE is only for the record that still names this session's handle, and
    #   the hop never changes the handle: it cannot point the record back at a handle
    #   a rotation (step-up, enterprise switch) dropped, where a later logout would
    #   delete the dead handle and leave the live one signed in;
    # - it is only for a record not ended: a logout that committed first (or holds the
    #   row: the UPDATE waits for it, then finds it ended) stays a logout;
    # - a logout after our commit sets ended_at (ours does not clear it), finds the
    #   same handle in the record, and deletes the store's entry: our write-back is
    #   SET ... XX, which then fails, so the code (stored with it, atomically) is not
    #   stored and the hop issues none, as before (the race tests of
    #   tests/test_sso_hop_session_end.py);
    # - the account is active (checked in the UPDATE): a disabled account's session
    #   gets nothing written back.
    # What it writes is what the write-back's sync would write (clients as read: a
    # portal joining now is found by single logout through its grant once it redeems
    # the code, sso.logout._portals).  What differs when the hop then issues no code:
    # the record's idle-expiry estimate moved although the session was not written
    # back (it left the store meanwhile, or the request gets a page, whose own
    # write-back syncs again); a logout still ends it, and an estimate it already is.
    # When the UPDATE hits no row (record missing, ended, or naming another handle),
    # the sync runs as it did: on a Core connection of the request's own, in one
    # transaction committed after the store's write (sso.db.open_own_connection, ~140 us
    # less than the ORM Session for statements that load no object); so it does when
    # the read cannot run in autocommit (the Session already in a transaction).  Such
    # a connection is always given back, rolled back unless committed.  Elsewhere
    # (SQLite): the Session, as before.
    outer = own_connection()
    if session is not None and browser_session.sync_due(session) and not consent.reads_at_once():
        open_own_connection()
    try:
        response = _authorize(oauth_request, session, interaction_id, lane)
        if response is not None:
            browser_session.settle(session)
    finally:
        opened = own_connection()
        if opened is not outer:
            close_own_connection(opened)
    return response


def _authorize(
    oauth_request: GatewayRequest,
    session: browser_session.BrowserSession | None,
    interaction_id: str | None,
    lane: bool = False,
) -> Response | None:
    """``lane``: None instead of any answer but a code (see :func:`code_or_none`), before any write."""
    server = _gateway().server
    state = oauth_request.payload.data.get("state")
    requested_client = oauth_request.payload.client_id
    end_user, account_assurance, remembered = _end_user(session, requested_client)
    if end_user is None and session is not None:
        if lane:
            return None
        # Its account is gone or disabled: no session, and it is not written back
        # (its idle expiry does not slide).
        browser_session.forget()
        session = None
    datalist = oauth_request.payload.datalist  # built on each use: once here for both checks
    checked = _check_client_and_redirect_uri(oauth_request, datalist, lane)
    if not isinstance(checked, str):
        return checked
    try:
        _check_parameters(oauth_request, checked, datalist)
        grant = server.get_consent_grant(oauth_request, end_user=end_user)
        redirect_uri = grant.redirect_uri
    except OAuth2Error as error:
        return None if lane else error_response(error, state)

    client: Client = grant.client
    interaction = load_interaction(interaction_id) if interaction_id else None
    ctx = consent.AuthorizationContext(
        client_id=client.client_id,
        scopes=(oauth_request.scope or "").split(),
        params=oauth_request.payload.data,
        session=session,
        interaction=interaction,
        account_assurance=account_assurance,
        remembered=remembered if client.client_id == requested_client else None,
    )
    prompt = consent.decide(ctx)
    if prompt is not None:
        if lane:
            return None
        return _interaction_needed(oauth_request, prompt, interaction, interaction_id, client, redirect_uri, state)

    assert session is not None and end_user is not None
    # The code is stored with the session's write-back below (save_authorization_code
    # leaves it in oauth_request.code_entry): one round trip for both.
    oauth_request.defer_code_write = True
    response = server.create_authorization_response(oauth_request, grant_user=end_user, grant=grant)
    code_entry = getattr(oauth_request, "code_entry", None) if response.status_code == 302 else None
    if lane and code_entry is None:
        return None  # an error redirect (nothing stored: the code write was deferred)
    if response.status_code == 302:
        # One store write for the session (with the new portal, or the sliding expiry
        # alone), and the code with it, atomically: stored only if the session still
        # is.  No database write unless the session's record is due its sync (then
        # committed with the read, see _answer, or here): the sign-in at the portal is audited when the portal
        # redeems the code (sso.oidc.grants, "authorize.code_redeemed"), and the
        # portal is then found by single logout through its grant.
        if client.client_id not in session.clients:
            session.clients.append(client.client_id)
            alive = browser_session.save(session, with_entry=code_entry)
        else:
            alive = browser_session.settle(session, with_entry=code_entry)
        if not alive:
            # The session ended (a logout here or elsewhere) after it was read: nothing
            # was written back for it and the code it got was never stored; the
            # request is answered as one without a session.
            rollback_unit()  # the Session's, or the request's own connection's
            browser_session.forget()
            if lane:
                return None
            log.info("authorize client=%s: the session ended during the request", client.client_id)
            login = consent.Prompt("login", "no_session")
            return _interaction_needed(oauth_request, login, interaction, interaction_id, client, redirect_uri, state)
    if interaction_id:
        _drop_interaction(interaction_id)
    return response  # type: ignore[no-any-return]


def deny(interaction_id: str) -> Response:
    """The user declined consent: access_denied to the (validated) redirect URI."""
    interaction = load_interaction(interaction_id)
    if interaction is None:
        return error_page(400, "invalid_request", "This sign-in request has expired.")
    oauth_request = GatewayRequest.from_stored(interaction["args"])
    _drop_interaction(interaction_id)
    try:
        grant = _gateway().server.get_consent_grant(oauth_request, end_user=None)
        redirect_uri = grant.redirect_uri
    except OAuth2Error as error:
        return error_response(error, oauth_request.payload.data.get("state"))
    from authlib.oauth2.rfc6749.errors import AccessDeniedError

    return error_response(AccessDeniedError(redirect_uri=redirect_uri), oauth_request.payload.data.get("state"))
