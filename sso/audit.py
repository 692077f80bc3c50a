"""Audit events, emitted at every seam: sign-ins, consents, tokens, logouts, admin actions.

Detail never holds a secret, a token or a full identity number: callers pass
identifiers (client ids, grant ids, masked numbers) only, and :func:`record`
enforces it — keys named like a credential are dropped, and any 18-character
value that checks out as a resident identity number or a unified social credit
code is masked, wherever it appears in the detail (or the actor).  Rows are
appended to a hash chain (``sso.audit_chain``); ``sso audit verify`` rechecks it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Flask

from . import audit_chain, logs, metrics
from .db import commit as commit_unit
from .db import db
from .identifiers import (
    InvalidIdentifier,
    credit_code_check_char,
    mask_credit_code,
    mask_resident_id,
    resident_id_check_char,
)

log = logging.getLogger("sso.audit")

# A sign-in at a portal: the portal redeemed its code, and so learnt who signed in
# (sso.oidc.grants).  Before 2026-12 the event was written when the code was issued
# (SIGN_IN_EVENT_UNTIL_2026_12); the statistics count both (sso.stats).
SIGN_IN_EVENT = "authorize.code_redeemed"
SIGN_IN_EVENT_UNTIL_2026_12 = "authorize.code_issued"

# A detail key named like a credential is dropped whatever its value.
CREDENTIAL_KEY = re.compile(r"secret|passw|token", re.IGNORECASE)
# 18 letters/digits standing alone: the length of both national identifiers.
_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])[0-9A-Za-z]{18}(?![0-9A-Za-z])")
_ID_NUMBER = re.compile(r"[0-9]{17}[0-9X]")
_CREDIT_CODE = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}")


def _mask_match(match: re.Match[str]) -> str:
    # The check character alone decides (not region or birth date), so a number
    # from an unknown region or test data is masked too: masking errs wide.
    value = match.group(0).upper()
    try:
        if _ID_NUMBER.fullmatch(value) and resident_id_check_char(value[:17]) == value[17]:
            return mask_resident_id(value)
        if _CREDIT_CODE.fullmatch(value) and credit_code_check_char(value[:17]) == value[17]:
            return mask_credit_code(value)
    except InvalidIdentifier:  # pragma: no cover - the patterns above rule this out
        pass
    return match.group(0)


def mask_identifiers(text: str) -> str:
    """``text`` with every full identity number or credit code in it masked."""
    return _CANDIDATE.sub(_mask_match, text)


def scrub(value: Any, dropped: list[str] | None = None) -> Any:
    """A JSON value with credential-named keys removed and identifiers masked."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if CREDENTIAL_KEY.search(key):
                if dropped is not None:
                    dropped.append(key)
                continue
            out[mask_identifiers(key)] = scrub(item, dropped)
        return out
    if isinstance(value, list):
        return [scrub(item, dropped) for item in value]
    if isinstance(value, str):
        return mask_identifiers(value)
    if isinstance(value, int) and not isinstance(value, bool) and len(str(value)) == 18:
        masked = mask_identifiers(str(value))
        return masked if masked != str(value) else value
    return value


# Values that come back from a JSON round trip as they went in.
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})


def safe_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """What is stored for ``detail``: plain JSON (odd types as text), scrubbed."""
    if all(type(key) is str and type(value) in _PLAIN_TYPES for key, value in detail.items()):
        plain = detail  # already plain JSON (the usual detail): no round trip needed
    else:
        plain = json.loads(json.dumps(detail, default=str))
    dropped: list[str] = []
    clean: dict[str, Any] = scrub(plain, dropped)
    if dropped:
        log.warning("audit detail keys dropped (named like a credential): %s", ", ".join(sorted(dropped)))
        clean["redacted_keys"] = sorted(dropped)
    return clean


def record(
    event: str,
    *,
    outcome: str = "success",
    actor: str | None = None,
    client_id: str | None = None,
    commit: bool = True,
    **detail: Any,
) -> None:
    ip = logs.client_address()  # a page's, or a protocol call's served by sso.oidc.lane
    audit_chain.append(
        db.session,
        event=event,
        outcome=outcome,
        actor=mask_identifiers(actor) if actor else actor,
        client_id=client_id,
        ip=ip,
        detail=safe_detail(detail),
    )
    if commit:
        commit_unit()  # the Session's, or the request's own connection's (sso.db.open_own_connection)
    log.info("audit %s outcome=%s actor=%s client=%s", event, outcome, actor, client_id)
    if event == "login":
        metrics.login(outcome, detail.get("connector"))


def init_app(app: Flask) -> None:
    """Nothing to mount yet; kept so create_app initialises every module the same way."""
