"""``sso serve --production``: the gateway under granian (default) or gunicorn.

granian is the default because it answers more requests per core
(benchmarks/README.md: 4-5x gunicorn on discovery and JWKS, 1.15-1.3x on the
token endpoints) and passes the robustness tests gunicorn was kept for
(tests/test_server_granian.py, real processes on PostgreSQL + Redis: TERM with
requests in flight, killed and wedged workers), except a rolling HUP, which
``sso serve`` therefore does not do under granian (below).  ``--server
gunicorn`` keeps gunicorn's threaded workers.

Either way the master validates the configuration (every problem at once),
refuses the embedded single-process backends (unless ``--allow-embedded`` with
one worker), migrates the schema and makes the first keys, then forks the
workers.  Each worker builds its own app from the settings the master validated
(its own database and Redis pools) and starts its own logout notifier after the
fork.  Signals to the master:

* ``TERM`` (or ``INT``): stop accepting, let in-flight requests finish
  (``GRACEFUL_TIMEOUT``), exit 0;
* ``HUP``: under gunicorn, replace the workers gracefully (same settings).
  Under granian it is logged and ignored (``HUP_IGNORED``): a granian worker told
  to stop closes, unanswered, the connections it has accepted but whose request
  it has not read yet (hyper's HTTP/1 graceful shutdown), so a rolling
  replacement fails a request arriving at that instant (measured: about one per
  worker replaced under steady traffic of new connections; gunicorn none).  A
  HUP changes neither settings nor code (the master's), so nothing is lost;
* a worker that dies is replaced.  A worker wedged inside a request (holding the
  GIL) is ended after ``--timeout`` seconds: by gunicorn's master (worker
  timeout) or, under granian, which has no worker timeout, by the worker's own
  watchdog (sso/watchdog.py) — granian then starts a new one.  granian stops the
  whole server (exit 1, for the service manager to restart) when a worker it has
  just replaced dies again within 5.5 s: a crash loop.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from .config import Settings, replace

DEFAULT_THREADS = 4
GRACEFUL_TIMEOUT = 30  # seconds for in-flight requests at TERM/HUP
KEEPALIVE = 5  # seconds: behind a load balancer that reuses connections


def pool_size_for(settings: Settings, threads: int) -> Settings:
    """The settings a worker with ``threads`` threads runs with: its pool sized to them.

    A request may hold two database connections for a moment (its session's, and one
    of its own for a statement that commits by itself: sso.db.execute_at_once), and
    the process's background work (the logout notifier, the readiness check) one
    each.  A pool smaller than that can leave every thread holding one connection
    and waiting for a second until the pool's timeout (a stall, then 503s).  A size
    set in the configuration stands.
    """
    if settings.database_pool_size:
        return settings
    return replace(settings, database_pool_size=2 * threads + 2)


def default_workers() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


def embedded_problems(settings: Settings, workers: int | None, allow_embedded: bool) -> list[str]:
    """Why these settings cannot run several worker processes; empty when they can."""
    problems: list[str] = []
    embedded_store = not settings.redis_url
    sqlite = settings.resolved_database_url.startswith("sqlite")
    if not allow_embedded:
        if embedded_store:
            problems.append(
                "--production runs several worker processes, which cannot share the embedded in-process "
                "store: set redis_url (SSO_REDIS_URL)"
            )
        if sqlite:
            problems.append(
                "--production needs a database server shared by every worker and instance: set "
                "database_url (SSO_DATABASE_URL) to PostgreSQL"
            )
        if problems:
            problems.append("or pass --allow-embedded to run one worker on the embedded backends anyway")
    elif embedded_store and workers is not None and workers > 1:
        problems.append(
            f"--workers {workers}: the embedded store lives inside one process; use --workers 1 or set redis_url"
        )
    return problems


@contextlib.contextmanager
def multiprocess_metrics_dir() -> Iterator[str]:
    """An empty folder for prometheus-client's per-process files, in the environment.

    Must run before anything imports prometheus_client (sso.metrics), which picks
    its multiprocess mode at import.  An operator's PROMETHEUS_MULTIPROC_DIR is
    used (and emptied: files of a previous run would be added in); otherwise a
    private temporary folder, removed at exit.
    """
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):
            os.unlink(stale)
        yield given
        return
    path = tempfile.mkdtemp(prefix="sso-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    master = os.getpid()
    try:
        yield path
    finally:
        # A worker leaving (sys.exit in the forked child) unwinds this frame too:
        # only the master removes the folder.
        if os.getpid() == master:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            shutil.rmtree(path, ignore_errors=True)


# granian's own lines (boot, workers started and stopped) go through the gateway's
# root handler: its format, redacted.
GRANIAN_LOGGING: dict[str, Any] = {
    "loggers": {
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": False},  # the gateway writes its own access lines
    },
}


HUP_IGNORED = (
    "HUP ignored: the workers keep running. granian closes the connections a stopping worker accepted but had "
    "not read yet, so replacing workers could fail requests; HUP would change neither settings nor code. "
    "Restart the instance (drained by the load balancer) to apply changes, or serve with --server gunicorn."
)


def _granian_worker_app(settings: Settings, timeout: int, _target: str) -> Any:
    """In each granian worker, after the fork: its own app, pools, notifier and watchdog.

    The app is built from the settings the master validated (``--config`` included),
    not re-read from the environment, exactly as the gunicorn workers do.
    """
    from multiprocessing.util import Finalize

    from . import create_app, logs, watchdog

    logs.configure(settings.log_format, settings.log_level)  # granian configured logging again in the worker
    app = create_app(settings)
    notifier = app.extensions["sso_notifier"]
    notifier.start()
    # A worker told to stop (TERM) lets its notifier finish the round in progress
    # before it exits, as gunicorn's worker_exit does (multiprocessing runs this at exit).
    Finalize(None, notifier.stop, exitpriority=10)
    watchdog.start(timeout)
    return app


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    timeout: int,
) -> None:
    """Serve under granian (the default); blocks until stopped.  The master's own app must already be disposed.

    granian has no worker timeout: each worker runs sso.watchdog, which ends a
    worker that stopped running Python for ``timeout`` seconds, and granian starts
    a new one (``respawn_failed_workers``).
    """
    import logging
    from functools import partial

    from granian import Granian
    from granian.constants import Interfaces

    class GatewayGranian(Granian):  # type: ignore[misc,valid-type]
        def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
            logging.getLogger("sso.server").warning(HUP_IGNORED)

    GatewayGranian(
        "sso.wsgi:app",  # a name for granian's lines: the workers load _granian_worker_app
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        runtime_threads=1,
        websockets=False,
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_TIMEOUT,
        log_level=settings.log_level.lower(),  # type: ignore[arg-type]
        log_dictconfig=GRANIAN_LOGGING,
    ).serve(target_loader=partial(_granian_worker_app, settings, timeout))


def run_gunicorn(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    timeout: int,
) -> None:
    """Serve under gunicorn (``--server gunicorn``); blocks until stopped.  The master's own app must be disposed."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.glogging import Logger

    from . import logs

    class GatewayLogger(Logger):
        """gunicorn's own lines (boot, worker timeouts) in the gateway's format, redacted."""

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for handler in self.error_log.handlers:
                handler.setFormatter(logs.JsonFormatter() if settings.log_format == "json" else logs.TextFormatter())
                handler.addFilter(logs.RedactingFilter())

    def post_worker_init(worker: Any) -> None:
        # After the fork, in the worker: the notifier thread belongs to this process.
        worker.wsgi.extensions["sso_notifier"].start()

    def worker_exit(server: Any, worker: Any) -> None:
        app = getattr(worker, "wsgi", None)
        if app is not None and hasattr(app, "extensions"):
            app.extensions["sso_notifier"].stop()

    def child_exit(server: Any, worker: Any) -> None:
        from . import metrics

        metrics.mark_process_dead(worker.pid)

    options: dict[str, Any] = {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": timeout,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": KEEPALIVE,
        "preload_app": False,  # each worker builds its own app after the fork
        "accesslog": None,  # the gateway writes its own access lines (endpoint, no query strings)
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "logger_class": GatewayLogger,
        "proc_name": "sso-gateway",
        "control_socket_disable": True,  # no shared socket in $HOME between instances
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
        "child_exit": child_exit,
    }

    class GatewayServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from . import create_app

            return create_app(settings)

    GatewayServer().run()
