"""Login and consent decisions, as a list of named checks.

Model: node-oidc-provider ``lib/actions/authorization`` — each check returns the
reason an interaction is needed, so why a prompt appeared is always known and logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select

from . import assurance
from .db import DriverSQL, db, driver_connection, driver_execute, execute_at_once, own_connection
from .models import Account, Consent
from .session import BrowserSession


@dataclass(frozen=True)
class Prompt:
    kind: str  # login | consent
    reason: str  # the name of the check that asked for it


@dataclass
class AuthorizationContext:
    client_id: str
    scopes: list[str]
    params: Any  # the request's parameters (a MultiDict)
    session: BrowserSession | None
    interaction: dict[str, Any] | None  # the interaction this request resumes, if any
    account_assurance: str = "self-asserted"  # of the session's account
    # The scopes remembered for this account and portal, when already read with the
    # account (standing_with_consent); None: read them when needed.
    remembered: set[str] | None = None


# The page that handles each kind of prompt (an endpoint name for url_for).
PROMPT_PAGES = {
    "login": "web.login",
    "second_factor": "mfa.challenge",
    "select_enterprise": "enterprise.select",
    "consent": "web.consent",
}


def _prompts(ctx: AuthorizationContext) -> list[str]:
    return str(ctx.params.get("prompt") or "").split()


def _fresh_login(ctx: AuthorizationContext) -> bool:
    """True when the session's login happened inside this very interaction."""
    return bool(
        ctx.interaction
        and ctx.session
        and ctx.session.auth_time >= int(ctx.interaction.get("created", 0))
    )


def no_session(ctx: AuthorizationContext) -> Prompt | None:
    return Prompt("login", "no_session") if ctx.session is None else None


def prompt_login(ctx: AuthorizationContext) -> Prompt | None:
    if "login" in _prompts(ctx) and not _fresh_login(ctx):
        return Prompt("login", "prompt_login")
    return None


def max_age(ctx: AuthorizationContext) -> Prompt | None:
    raw = ctx.params.get("max_age")
    if raw is None or ctx.session is None:
        return None
    # OIDC Core §3.1.2.1: max_age is a non-negative integer number of seconds.
    age = int(raw)
    if time.time() - ctx.session.auth_time > age and not _fresh_login(ctx):
        return Prompt("login", "max_age")
    return None


def acr_step_up(ctx: AuthorizationContext) -> Prompt | None:
    """acr_values asks for more than the session has: ask only for the missing factor."""
    if ctx.session is None:
        return None
    requested = ctx.params.get("acr_values")
    if not requested:
        # OIDC Core §5.5.1.1: an essential acr in the claims parameter is a requirement too.
        from .claims_request import InvalidClaimsRequest, parse

        try:
            parsed = parse(ctx.params.get("claims"))
        except InvalidClaimsRequest:
            parsed = None
        requested = parsed.essential_acr_values() if parsed else None
    needed = assurance.missing_factor(ctx.session.amr, ctx.account_assurance, requested)
    return Prompt("second_factor", "acr_values") if needed == "second_factor" else None


def enterprise_choice(ctx: AuthorizationContext) -> Prompt | None:
    """A portal asking for cn_legal_person needs the enterprise chosen for this session."""
    if ctx.session is None or "cn_legal_person" not in ctx.scopes:
        return None
    if not ctx.session.acting:
        return Prompt("select_enterprise", "legal_person_scope")
    from . import legal
    from .connectors.base import RegistryUnavailable

    try:
        valid = legal.still_valid(ctx.session.acting)
    except RegistryUnavailable:
        valid = False  # fail closed: the selection page says the registry is down
    # The choice made earlier in this session has ended (authorisation revoked or
    # expired, licence revoked): choose again rather than put it in a new code.
    return None if valid else Prompt("select_enterprise", "acting_ended")


def prompt_consent(ctx: AuthorizationContext) -> Prompt | None:
    if "consent" in _prompts(ctx) and not (ctx.interaction and ctx.interaction.get("consented")):
        return Prompt("consent", "prompt_consent")
    return None


def missing_scopes(ctx: AuthorizationContext) -> Prompt | None:
    if ctx.session is None:
        return None
    if ctx.interaction and ctx.interaction.get("consented"):
        return None
    granted = ctx.remembered if ctx.remembered is not None else remembered_scopes(ctx.session.account_id, ctx.client_id)
    if not set(ctx.scopes) <= granted:
        return Prompt("consent", "missing_scopes")
    return None


CHECKS: list[Callable[[AuthorizationContext], Prompt | None]] = [
    no_session,
    prompt_login,
    max_age,
    acr_step_up,
    enterprise_choice,
    prompt_consent,
    missing_scopes,
]


def decide(ctx: AuthorizationContext) -> Prompt | None:
    """The first check that asks for an interaction, or None: issue the code."""
    for check in CHECKS:
        prompt = check(ctx)
        if prompt is not None:
            return prompt
    return None


# ---- remembered consent ------------------------------------------------------------


class Standing(NamedTuple):
    """What the authorization endpoint needs of the signed-in account: no ORM object."""

    status: str
    assurance: str


# The account with its remembered consent in one query, only the columns the
# authorization endpoint reads (no ORM object): on PostgreSQL straight on the driver
# (sso.db.driver_execute), elsewhere through Core.  Built once.
_STANDING_WITH_CONSENT = (
    select(Account.status, Account.assurance, Consent.scopes)
    .outerjoin(Consent, (Consent.account_id == Account.id) & (Consent.client_id == bindparam("client_id")))
    .where(Account.id == bindparam("account_id"))
)
_STANDING_WITH_CONSENT_SQL = DriverSQL(
    """
SELECT accounts.status, accounts.assurance, consents.scopes
FROM accounts LEFT OUTER JOIN consents
    ON consents.account_id = accounts.id AND consents.client_id = %(client_id)s
WHERE accounts.id = %(account_id)s
"""
)


# The same read with the session record's due sync (sso.session.RECORD_SYNC) riding on
# it, for the SSO hop (standing_with_sync): one statement, in autocommit.  The UPDATE
# is _RECORD_UPDATE_SQL (sso.session) with two more conditions: the record still names
# this session's handle, and the account is active (a disabled account's session is
# no session: nothing of it is written back, sso.oidc.authorize._end_user).  The
# fourth column: whether the UPDATE changed the record.  (A data-modifying WITH runs
# once and to completion whatever the SELECT reads; both see the same snapshot.)
_STANDING_WITH_SYNC_SQL = DriverSQL(
    """
WITH synced AS (
    UPDATE session_records
    SET handle = %(b_handle)s, clients = CAST(%(b_clients)s AS json),
        last_seen_at = %(b_last_seen_at)s, expires_at = %(b_expires_at)s
    WHERE session_records.sid = %(b_sid)s AND session_records.ended_at IS NULL
        AND session_records.handle = %(b_handle)s
        AND EXISTS (SELECT 1 FROM accounts AS active
                    WHERE active.id = %(account_id)s AND active.status = 'active')
    RETURNING session_records.sid
)
SELECT accounts.status, accounts.assurance, consents.scopes, EXISTS (SELECT 1 FROM synced)
FROM accounts LEFT OUTER JOIN consents
    ON consents.account_id = accounts.id AND consents.client_id = %(client_id)s
WHERE accounts.id = %(account_id)s
"""
)


def reads_at_once() -> bool:
    """Whether the account + consent read runs by itself in autocommit (sso.db.execute_at_once):
    PostgreSQL + psycopg, no own connection open, the ORM Session in no transaction."""
    return own_connection() is None and db.engine.dialect.driver == "psycopg" and not _session_busy()


def standing_with_consent(account_id: str, client_id: str | None) -> tuple[Standing | None, set[str]]:
    """The account's status and assurance, and the scopes it allowed ``client_id``: one query.

    On PostgreSQL: on the request's own connection while one is open (its
    transaction), else, when the ORM Session holds no transaction, as a statement
    of its own in autocommit (sso.db.execute_at_once: one round trip, no BEGIN or
    ROLLBACK around it; the SSO hop when its session record needs no sync).
    """
    params = {"account_id": account_id, "client_id": client_id}
    if reads_at_once():
        row = execute_at_once(_STANDING_WITH_CONSENT_SQL, params)
    else:
        connection = driver_connection(db.session)
        if connection is not None:
            row = driver_execute(connection, _STANDING_WITH_CONSENT_SQL, params).fetchone()
        else:
            row = db.session.execute(_STANDING_WITH_CONSENT, params).first()
    if row is None:
        return None, set()
    return Standing(row[0], row[1]), set(row[2] or ())


def standing_with_sync(session: BrowserSession, client_id: str | None) -> tuple[Standing | None, set[str], bool]:
    """:func:`standing_with_consent` for ``session``'s account, with its record's due sync
    in the same statement, in autocommit (the caller checked :func:`reads_at_once`).

    The third value: whether the record was synced (and committed).  Then the session
    is marked so (sso.session.synced_by_read): its write-back is a SET with the new
    ``synced_at`` and no UPDATE.  False: the account is missing or not active (nothing
    written), or the record is missing, ended, or names another handle: the caller
    falls back to the sync as it was (sso.session._sync_record).
    """
    from . import session as browser_session

    params = browser_session.record_sync_params(session)
    params["account_id"] = session.account_id
    params["client_id"] = client_id
    row = execute_at_once(_STANDING_WITH_SYNC_SQL, params)
    if row is None:
        return None, set(), False
    if row[3]:
        browser_session.synced_by_read(session)
    return Standing(row[0], row[1]), set(row[2] or ()), bool(row[3])


def _session_busy() -> bool:
    """Whether the request's ORM Session is in a transaction (a read must join it)."""
    return bool(db.session.registry.has() and db.session().in_transaction())


def remembered_scopes(account_id: str, client_id: str) -> set[str]:
    row = db.session.execute(
        db.select(Consent).filter_by(account_id=account_id, client_id=client_id)
    ).scalar_one_or_none()
    return set(row.scopes) if row else set()


def remember(account_id: str, client_id: str, scopes: list[str]) -> None:
    row = db.session.execute(
        db.select(Consent).filter_by(account_id=account_id, client_id=client_id)
    ).scalar_one_or_none()
    if row is None:
        db.session.add(Consent(account_id=account_id, client_id=client_id, scopes=sorted(set(scopes))))
    else:
        row.scopes = sorted(set(row.scopes) | set(scopes))
    db.session.commit()
