"""``sso serve --production``: the gateway under gunicorn (threaded workers).

Chosen by measurement (benchmarks/README.md, "WSGI server choice"): granian
answered more requests per core on cheap endpoints, but a worker wedged inside a
request (holding the GIL) was never replaced and ignored SIGTERM, while gunicorn's
master killed and replaced it after the worker timeout.  On the token endpoint,
where the gateway's own work dominates, the two were close.

The master validates the configuration (every problem at once), refuses the
embedded single-process backends (unless ``--allow-embedded`` with one worker),
migrates the schema and makes the first keys, then forks the workers.  Each
worker builds its own app (its own database and Redis pools) and starts its own
logout notifier after the fork.  ``HUP`` replaces the workers gracefully, ``TERM``
stops after in-flight requests finish (``graceful_timeout``), and a worker that
stops answering its master for ``--timeout`` seconds is killed and replaced.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from .config import Settings

DEFAULT_THREADS = 4
GRACEFUL_TIMEOUT = 30  # seconds for in-flight requests at TERM/HUP
KEEPALIVE = 5  # seconds: behind a load balancer that reuses connections


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


def run_granian(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    timeout: int,
) -> None:
    """Serve under granian instead (``--server granian``); blocks until stopped.

    Measured faster than gunicorn (benchmarks/README.md: 5x on discovery and JWKS,
    1.15-1.2x on token and introspection), but granian has no worker timeout: each
    worker runs sso.watchdog, which ends a worker that stopped running Python for
    ``timeout`` seconds, and granian starts a new one (respawn_failed_workers).
    Workers import ``sso.wsgi:app`` (their own app, pools and notifier).
    """
    from granian import Granian
    from granian.constants import Interfaces

    from . import watchdog

    os.environ[watchdog.ENV] = str(timeout)
    Granian(
        "sso.wsgi:app",
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
    ).serve()


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    timeout: int,
) -> None:
    """Serve until stopped (blocks).  The master's own app must already be disposed."""
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
