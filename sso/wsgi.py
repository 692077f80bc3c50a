"""WSGI entry point: ``app``, for running the gateway under a WSGI server directly.

    SSO_CONFIG=/etc/sso/gateway.toml PROMETHEUS_MULTIPROC_DIR=/run/sso-metrics \\
        gunicorn --workers 4 --worker-class gthread --threads 4 'sso.wsgi:app'

``sso serve --production`` does the same with the settings it was measured with,
and also migrates the schema first; prefer it.  When running a server by hand:

* settings come from ``SSO_CONFIG`` and ``SSO_*`` variables, exactly as for the
  ``sso`` command (every problem reported at once); run ``sso db upgrade`` first;
* import this module in each worker, after the fork (gunicorn's default: no
  ``--preload``), so that the app, its connection pools and the worker's logout
  notifier belong to that worker.  With a pre-fork import anyway, the at-fork hook
  below drops the parent's pooled database connections in the child and starts
  the child's own notifier;
* with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder
  before the server starts, so ``/metrics`` adds up every worker.
"""

from __future__ import annotations

import os

from . import create_app, logs, watchdog
from .db import db

app = create_app()
_settings = app.extensions["sso"].settings
logs.configure(_settings.log_format, _settings.log_level)
app.extensions["sso_notifier"].start()  # back-channel logouts, session expiry: one per process
# Under granian (`sso serve --production --server granian`): a wedged worker ends itself.
watchdog.start(float(os.environ.get(watchdog.ENV) or 0))


def _after_fork_in_child() -> None:
    with app.app_context():
        db.engine.dispose(close=False)  # the parent's sockets stay the parent's
    app.extensions["sso_notifier"].start()  # the parent's thread did not come along
    watchdog.start(float(os.environ.get(watchdog.ENV) or 0))  # neither did the watchdog


os.register_at_fork(after_in_child=_after_fork_in_child)
