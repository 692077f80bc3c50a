"""Audit events, emitted at every seam: sign-ins, consents, tokens, logouts, admin actions.

Detail never holds a secret, a token or a full identity number: callers pass
identifiers (client ids, grant ids, masked numbers) only.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, has_request_context, request

from . import metrics
from .db import db
from .models import AuditEvent

log = logging.getLogger("sso.audit")


def record(
    event: str,
    *,
    outcome: str = "success",
    actor: str | None = None,
    client_id: str | None = None,
    commit: bool = True,
    **detail: Any,
) -> None:
    ip = request.remote_addr if has_request_context() else None
    db.session.add(
        AuditEvent(event=event, outcome=outcome, actor=actor, client_id=client_id, ip=ip, detail=detail)
    )
    if commit:
        db.session.commit()
    log.info("audit %s outcome=%s actor=%s client=%s", event, outcome, actor, client_id)
    if event == "login":
        metrics.login(outcome, detail.get("connector"))


def init_app(app: Flask) -> None:
    """Nothing to mount yet; kept so create_app initialises every module the same way."""
