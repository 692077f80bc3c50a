"""A worker process that stops running Python for ``timeout`` seconds ends itself.

For WSGI servers that replace a worker that exits but have no worker timeout of
their own (granian: ``respawn_failed_workers``): ``sso serve --production`` starts
it in each granian worker (sso.server), sso.wsgi from ``GATEWAY_WORKER_WATCHDOG``
for a server run by hand.  A daemon thread re-arms a
C-level timer (``faulthandler.dump_traceback_later``) every second; the timer runs
outside the interpreter, so it fires even while a wedged request holds the GIL
(the case benchmarks/wsgi/hang.py shows: a regular expression backtracking for
hours) — then it writes every thread's traceback to stderr and ``_exit(1)``s, and
the server starts a new worker.  gunicorn's master does the same job with its
worker timeout, so ``sso serve --production`` under gunicorn does not use this.

Scope: the whole process stopped making progress (what a master's heartbeat sees
too).  A single request stuck in I/O while other threads go on is not a wedge.
"""

from __future__ import annotations

import faulthandler
import sys
import threading
import time
from typing import Any

# The variable that tells a server's worker (sso.wsgi at import) to start it, in seconds.
ENV = "GATEWAY_WORKER_WATCHDOG"

_lock = threading.Lock()
_thread: threading.Thread | None = None


def start(timeout: float, stream: Any = None) -> threading.Thread | None:
    """Start the heartbeat (once per process); ``timeout`` <= 0 does nothing."""
    global _thread
    if timeout <= 0:
        return None
    with _lock:
        if _thread is not None and _thread.is_alive():
            return _thread
        interval = max(min(1.0, timeout / 3), 0.05)
        out = stream if stream is not None else sys.stderr

        def beat() -> None:
            while True:
                # Replaces the previous timer: it fires only after `timeout` s without a beat.
                faulthandler.dump_traceback_later(timeout, exit=True, file=out)
                time.sleep(interval)

        _thread = threading.Thread(target=beat, name="sso-watchdog", daemon=True)
        _thread.start()
        return _thread
