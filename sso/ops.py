"""Operations endpoints: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics``.

* ``/healthz``: the process answers.  No dependency is touched, so a database or
  Redis outage never gets healthy gateway processes restarted by an orchestrator.
* ``/readyz``: the database answers a trivial query and the short-lived store a
  PING.  200 ``{"status": "ready", "checks": {...}}`` or 503 naming the check
  that failed (``unavailable`` or ``timeout``; details go to the log only).
  Never hangs: each check runs in its own thread and is abandoned after
  ``CHECK_TIMEOUT`` seconds, and a check still stuck from an earlier probe counts
  as a timeout instead of starting another thread.
* ``/metrics``: Prometheus exposition (sso.metrics), 404 unless ``metrics_enabled``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app, jsonify
from sqlalchemy import text
from werkzeug.exceptions import NotFound

from . import metrics
from .db import db

log = logging.getLogger("sso.ops")

CHECK_TIMEOUT = 2.0  # seconds, for all checks together

bp = Blueprint("ops", __name__)


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/healthz")
def healthz() -> Response:
    return _no_store(jsonify({"status": "ok"}))


def _check_database(app: Flask) -> None:
    with app.app_context(), db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _check_store(app: Flask) -> None:
    app.extensions["sso"].store.ping()


CHECKS: dict[str, Callable[[Flask], None]] = {"database": _check_database, "store": _check_store}


class _Probe:
    """One check in its own thread; at most one thread per check and app at a time."""

    def __init__(self, app: Flask, name: str, check: Callable[[Flask], None]) -> None:
        self.name = name
        self.result: str | None = None
        busy: dict[str, threading.Lock] = app.extensions.setdefault("sso_readyz_busy", {})
        self._lock = busy.setdefault(name, threading.Lock())
        self._thread: threading.Thread | None = None
        if self._lock.acquire(blocking=False):
            self._thread = threading.Thread(target=self._run, args=(app, check), name=f"sso-readyz-{name}", daemon=True)
            self._thread.start()
        else:
            log.warning("readiness check %s: the previous check has not returned", name)
            self.result = "timeout"

    def _run(self, app: Flask, check: Callable[[Flask], None]) -> None:
        try:
            check(app)
            self.result = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.warning("readiness check %s failed: %s: %s", self.name, exc.__class__.__name__, exc)
            self.result = "unavailable"
        finally:
            self._lock.release()

    def wait(self, deadline: float) -> str:
        if self._thread is not None:
            self._thread.join(max(deadline - time.monotonic(), 0))
            if self._thread.is_alive():
                log.warning("readiness check %s: no answer within %.1f s", self.name, CHECK_TIMEOUT)
                return "timeout"
        return self.result or "unavailable"


@bp.get("/readyz")
def readyz() -> Response:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    deadline = time.monotonic() + CHECK_TIMEOUT
    probes = [_Probe(app, name, check) for name, check in CHECKS.items()]
    checks = {probe.name: probe.wait(deadline) for probe in probes}
    ready = all(result == "ok" for result in checks.values())
    response = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    response.status_code = 200 if ready else 503
    return _no_store(response)


@bp.get("/metrics", endpoint="metrics")
def metrics_view() -> Response:
    if not current_app.extensions["sso"].settings.metrics_enabled:
        raise NotFound()
    return metrics.metrics_response()


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
