"""Administrator pages: usage statistics as server-rendered charts.

Only a signed-in account marked ``is_admin`` (``sso accounts create --admin`` or
``sso accounts grant-admin``) may see them; anyone else signed in gets a 403
page, and a signed-out browser is sent to the sign-in page.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from .. import session as browser_session
from .. import stats as statistics
from ..assurance import HIGH, LOW, SUBSTANTIAL
from ..db import db
from ..errors import error_page
from ..models import Account
from .charts import bar_chart, line_chart

bp = Blueprint("admin", __name__)

DAY_CHOICES = (7, 14, 30, 90)
DEFAULT_DAYS = 14
# Lines in the per-day chart besides the total; the table below lists every portal.
MAX_PORTAL_LINES = 6

PRINCIPAL_TEXT = {
    "natural": _l("Natural person"),
    "legal": _l("Legal person (acting for an enterprise)"),
}
ACR_TEXT = {
    LOW.acr: _l("Level 1: password, self-asserted identity"),
    SUBSTANTIAL.acr: _l("Level 2: password, registry-verified identity"),
    HIGH.acr: _l("Level 3: password and second factor, registry-verified identity"),
}


def _admin() -> Account | Response:
    current = browser_session.current()
    account = db.session.get(Account, current.account_id) if current else None
    if account is None:
        return redirect(url_for("web.login"))  # type: ignore[return-value]
    if not account.is_admin or account.status != "active":
        return error_page(403, "access_denied", _("This page is for gateway administrators only."))
    return account  # type: ignore[no-any-return]


def _days() -> int:
    try:
        days = int(request.args.get("days", DEFAULT_DAYS))
    except ValueError:
        return DEFAULT_DAYS
    return days if days in DAY_CHOICES else DEFAULT_DAYS


def _charts(result: statistics.Stats) -> dict[str, Any]:
    labels = [d.strftime("%m-%d") for d in result.days]
    active = [p for p in result.portals if p.total]
    series = [(str(_("All portals")), [result.per_day[d] for d in result.days])]
    if len(active) > 1:
        series += [(p.name, [p.per_day.get(d, 0) for d in result.days]) for p in active[:MAX_PORTAL_LINES]]
    principals = [(str(PRINCIPAL_TEXT.get(k, k)), v) for k, v in result.by_principal.items()]
    levels = [(str(ACR_TEXT.get(k, k)), v) for k, v in result.by_acr.items()]
    return {
        "per_day": line_chart(labels, series),
        "per_portal": bar_chart([(p.name, p.total) for p in result.portals]),
        "principal": bar_chart(principals),
        "acr": bar_chart(levels),
        "consents": bar_chart([(p.name, p.consents) for p in result.portals]),
        "principal_rows": principals,
        "acr_rows": [(k, str(ACR_TEXT.get(k, k)), v) for k, v in result.by_acr.items()],
    }


@bp.get("/admin/stats")
def stats_page() -> Response:
    checked = _admin()
    if isinstance(checked, Response):
        return checked
    days = _days()
    result = statistics.compute(days)
    body = render_template(
        "admin_stats.html",
        stats=result,
        charts=_charts(result),
        days=days,
        day_choices=DAY_CHOICES,
        account=checked,
    )
    return Response(body, mimetype="text/html")
