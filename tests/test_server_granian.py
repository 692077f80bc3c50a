"""``sso serve --production`` under granian (the default server): real processes on PostgreSQL + Redis.

The robustness gunicorn was chosen for, shown for granian:

* ``TERM``: requests in flight finish (200, none reset), the workers stop
  accepting at once, and the server exits 0 within the graceful timeout — sent
  to the master alone (a container runtime) or to the whole process group (a
  service manager's default);
* ``HUP``: granian's own reload (a new worker, then the old one told to stop)
  closes, unanswered, connections the old worker had accepted but not read yet
  (hyper's HTTP/1 graceful shutdown): under steady traffic of new connections
  about one request per worker replaced fails.  So under granian ``sso serve``
  logs HUP and ignores it (nothing it would reload: settings and code are the
  master's); requests in flight and arriving all succeed.  Under ``--server
  gunicorn`` HUP replaces every worker with the same result;
* a worker killed with ``SIGKILL`` is replaced and the server keeps answering; a
  worker that dies again right after its replacement stops the server with exit
  1 (a crash loop, for the service manager to restart) rather than spinning;
* a worker wedged inside Python (the GIL held) is ended by its watchdog after
  ``--timeout`` and replaced; its traceback shows that worker's own notifier and
  watchdog threads;
* each worker writes its own metrics files and ``/metrics`` adds them all up;
* the workers use the settings the master validated, ``--config`` included.

"In flight" is made exact, not timed: the gateway reaches PostgreSQL through a
forwarder that can hold what the gateway sends (``HoldingProxy``), so token
requests wait inside the workers, at their first query, for as long as the test
says.  Signals go to the processes directly; the workers' listening sockets are
read from /proc.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sqlalchemy.engine import make_url

from sso.server import GRACEFUL_TIMEOUT, HUP_IGNORED
from tests.backends import pg_url, redis_url  # noqa: F401 - fixtures
from tests.faults.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SSO = Path(sys.executable).with_name("sso")
ROOT = Path(__file__).resolve().parents[1]

# `sso serve` with a SIGUSR1 handler that wedges the process it runs in: catastrophic
# regex backtracking in the main thread, holding the GIL for hours (as tests/wedge_app.py
# does for a request).  The workers are forked from this master, so they have it too.
WEDGEABLE_SSO = (
    "import re, signal, sys\n"
    "signal.signal(signal.SIGUSR1, lambda *_: re.match(r'(a+)+$', 'a' * 64 + 'b'))\n"
    "from sso.cli import main\n"
    "sys.exit(main(sys.argv[1:], prog_name='sso'))\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float, what: str, log: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s\n{log()[-4000:]}")
        time.sleep(0.05)


READY_FOR_QUERY = b"Z\x00\x00\x00\x05"  # PostgreSQL's ReadyForQuery message (then one status byte)


class HoldingProxy(TcpProxy):
    """A TCP forwarder to PostgreSQL whose gateway-to-database direction can be held and released.

    While held, the queries of connected sessions wait in the forwarder; ``waiting``
    counts them, i.e. requests stopped inside a worker.  A connection still starting
    up (before the server's first ReadyForQuery) is never held, so a worker opening a
    new pooled connection meanwhile is not failed by its connect timeout: its first
    query is held instead.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._open = threading.Event()
        self._open.set()
        self._waiting = 0
        # Each socket: its connection's "session is up" event, and whether it is the
        # gateway's end (bytes from it go to the database).
        self._ends: dict[socket.socket, tuple[threading.Event, bool]] = {}
        self._tails: dict[socket.socket, bytes] = {}
        super().__init__(upstream)

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._waiting

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def _connect_pumps(self, client: socket.socket, server: socket.socket) -> None:
        started = threading.Event()  # the session is up: ReadyForQuery seen
        with self._lock:
            self._ends[client], self._ends[server] = (started, True), (started, False)
        super()._connect_pumps(client, server)

    def _forward(self, src: socket.socket, dst: socket.socket, data: bytes) -> None:
        started, upstream = self._ends[src]
        if not upstream and not started.is_set():
            tail = self._tails[src] = (self._tails.get(src, b"") + data)[-64:]
            if READY_FOR_QUERY in tail:
                started.set()
        if upstream and started.is_set() and not self._open.is_set():
            with self._lock:
                self._waiting += 1
            self._open.wait()
            with self._lock:
                self._waiting -= 1
        dst.sendall(data)

    def close(self) -> None:
        self._open.set()
        super().close()


def listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on 127.0.0.1:port (state 0A in /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    found.add(target[8:-1])
    return found


@dataclass
class Gateway:
    env: dict[str, str]
    port: int
    log: Path
    proxy: HoldingProxy
    proc: subprocess.Popen[bytes] | None = None
    client: tuple[str, str] = ("", "")
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(SSO), *args], env=self.env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, *args: str, command: list[str] | None = None, workers: int = 2, listeners: int = 0) -> None:
        argv = command or [str(SSO)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *argv,
                    "serve",
                    "--production",
                    "--workers",
                    str(workers),
                    "--threads",
                    "4",
                    "--port",
                    str(self.port),
                    *args,
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: killpg reaches master and workers
            )
        self.started.append(self.proc)
        wait_for(
            lambda: self.ready() and len(self.listeners()) == (listeners or workers), 60, "not ready", self.log_text
        )

    def warm(self) -> None:
        """New connections, so every worker (hashed by port) has read its keys: JWKS needs no query afterwards."""
        for _ in range(16):
            assert requests.get(self.base + "/jwks", headers={"Connection": "close"}, timeout=10).status_code == 200

    def warm_database(self) -> None:
        """New connections, so every worker has connected to the database once.

        A worker's first connection runs SQLAlchemy's dialect initialisation under a
        lock; a query of it held at the proxy would keep the worker's other new
        connections waiting on that lock, inside the worker but not at the proxy,
        where InFlight counts requests in flight.
        """
        for _ in range(16):
            assert requests.get(self.base + "/readyz", headers={"Connection": "close"}, timeout=10).status_code == 200

    def ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log_text()[-3000:]
        try:
            return requests.get(self.base + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def workers(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def listeners(self) -> list[int]:
        """The processes of this gateway with a socket listening on its port."""
        assert self.proc is not None
        inodes = listening_inodes(self.port)
        return [pid for pid in [self.proc.pid, *self.workers()] if socket_inodes(pid) & inodes]

    def token(self, timeout: float = 30) -> requests.Response:
        return requests.post(
            self.base + "/token",
            auth=self.client,
            timeout=timeout,
            data={"grant_type": "client_credentials", "scope": "openid"},
        )

    def stop(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=GRACEFUL_TIMEOUT + 10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


@pytest.fixture
def gateway(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Gateway]:  # noqa: F811
    url = make_url(pg_url)
    proxy = HoldingProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSO_", "PROMETHEUS_", "GATEWAY_"))}
    env.update(
        SSO_ISSUER=f"http://127.0.0.1:{port}",
        SSO_DEVELOPMENT="true",
        SSO_DATABASE_URL=proxied,
        SSO_REDIS_URL=redis_url,
        SSO_INSTANCE_PATH=str(tmp_path / "instance"),
        SSO_KEY_ENCRYPTION_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode(),
        SSO_KEY_PUBLISH_LEAD="0",
        SSO_CLIENT_CACHE_TTL="0",  # every token request reads its portal from the database
        SSO_BACKGROUND_INTERVAL="3600",  # the notifiers' first round only: no query of theirs is held
        SSO_KEY_REFRESH_INTERVAL="3600",  # JWKS from memory, not re-read from the (held) database
        SSO_METRICS_ENABLED="true",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        PYTHONUNBUFFERED="1",
    )
    gw = Gateway(env, port, tmp_path / "serve.log", proxy)
    registration = json.loads(
        gw.cli("clients", "create", "--name", "Granian", "--grant-type", "client_credentials", "--json")
    )
    gw.client = (registration["client_id"], registration["client_secret"])
    try:
        yield gw
    finally:
        proxy.release()
        gw.stop()
        proxy.close()


class InFlight:
    """Token requests sent while the database is held: they wait inside the workers."""

    def __init__(self, gw: Gateway, count: int) -> None:
        self.results: list[object] = []
        self._lock = threading.Lock()
        gw.warm_database()
        before = gw.proxy.waiting
        gw.proxy.hold()
        self._threads = [threading.Thread(target=self._one, args=(gw,)) for _ in range(count)]
        for thread in self._threads:
            thread.start()
        # Each request is stopped at its first query: inside a worker thread, in flight.
        wait_for(lambda: gw.proxy.waiting >= before + count, 20, f"{count} requests in flight", gw.log_text)

    def _one(self, gw: Gateway) -> None:
        try:
            response = gw.token(timeout=GRACEFUL_TIMEOUT + 10)
            outcome: object = (response.status_code, "access_token" in response.json())
        except (requests.RequestException, ValueError) as exc:
            outcome = exc
        with self._lock:
            self.results.append(outcome)

    def join(self) -> list[object]:
        for thread in self._threads:
            thread.join(timeout=GRACEFUL_TIMEOUT + 20)
        return self.results


class Traffic:
    """Discovery, JWKS and /healthz over new connections in a loop (no query), counting failures."""

    PATHS = ("/.well-known/openid-configuration", "/jwks", "/healthz")

    def __init__(self, gw: Gateway, threads: int = 4, limit: float = 60) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + limit  # bounded, whatever happens to the test
        self._threads = [threading.Thread(target=self._run, args=(gw,)) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, gw: Gateway) -> None:
        n = 0
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            path = self.PATHS[n % len(self.PATHS)]
            n += 1
            try:
                # Connection: close — every request a new connection, hashed to any worker.
                status = requests.get(gw.base + path, timeout=10, headers={"Connection": "close"}).status_code
                failure = None if status == 200 else f"{path}: {status}"
            except requests.RequestException as exc:
                failure = f"{path}: {exc!r}"
            with self._lock:
                if failure is None:
                    self.ok += 1
                else:
                    self.failures.append(failure)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


# ---- TERM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["master", "process group"])
def test_term_lets_requests_in_flight_finish_then_exits_0(gateway: Gateway, to: str) -> None:
    gateway.start()
    assert gateway.token().status_code == 200
    workers = gateway.workers()
    assert len(workers) == 2
    # Four token requests inside the workers (at most 4 threads each: none is queued).
    in_flight = InFlight(gateway, 4)

    assert gateway.proc is not None
    stopped_at = time.monotonic()
    if to == "master":
        gateway.proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(gateway.proc.pid, signal.SIGTERM)
    # Stopping: no worker accepts any more; a new connection is refused, not accepted and dropped.
    wait_for(lambda: not gateway.listeners(), 10, "the workers still listen after TERM", gateway.log_text)
    assert connection_refused(gateway.port)
    # The master waits for the workers with requests in flight (a worker without any is gone).
    assert gateway.proc.poll() is None and any(Path(f"/proc/{pid}").exists() for pid in workers)

    gateway.proxy.release()
    assert sorted(map(str, in_flight.join())) == ["(200, True)"] * 4, gateway.log_text()[-3000:]
    assert gateway.proc.wait(timeout=GRACEFUL_TIMEOUT) == 0, gateway.log_text()[-3000:]
    assert time.monotonic() - stopped_at < GRACEFUL_TIMEOUT
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert "Traceback" not in gateway.log_text()


# ---- HUP ------------------------------------------------------------------------------------


def test_hup_under_granian_is_logged_and_changes_nothing(gateway: Gateway) -> None:
    # granian's own reload (a new worker, then the old one told to stop) closes, unanswered,
    # connections the old worker had accepted but not read yet: `sso serve` ignores HUP
    # rather than fail requests (sso.server.HUP_IGNORED says why in the log).
    gateway.start()
    assert gateway.token().status_code == 200
    gateway.warm()
    workers = sorted(gateway.workers())
    traffic = Traffic(gateway)
    try:
        in_flight = InFlight(gateway, 2)  # at most 2 of a worker's 4 threads: the traffic goes on
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "HUP ignored" in gateway.log_text(), 10, "HUP was not logged", gateway.log_text)
        served = traffic.ok
        wait_for(lambda: traffic.ok > served + 50, 20, "no traffic after HUP", gateway.log_text)
        gateway.proxy.release()
        results = in_flight.join()
    finally:
        traffic.stop()
    assert sorted(map(str, results)) == ["(200, True)"] * 2, gateway.log_text()[-3000:]
    assert traffic.failures == [], traffic.failures[:10]
    assert sorted(gateway.workers()) == workers and sorted(gateway.listeners()) == workers
    assert HUP_IGNORED in gateway.log_text() and "Respawning" not in gateway.log_text()
    assert gateway.token().status_code == 200


def test_hup_under_gunicorn_replaces_every_worker_without_failing_a_request(gateway: Gateway) -> None:
    gateway.start("--server", "gunicorn", listeners=3)  # gunicorn's master holds the socket too
    assert gateway.token().status_code == 200
    old = set(gateway.workers())
    traffic = Traffic(gateway)
    try:
        in_flight = InFlight(gateway, 4)
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        # The master starts two new workers, then tells the old ones to stop; their requests
        # in flight keep them running until the database answers.
        wait_for(lambda: len(set(gateway.workers()) - old) == 2, 30, "no new workers", gateway.log_text)
        time.sleep(2)  # gthread notices the stop within its 1 s poll: release only after it has
        assert set(gateway.workers()) & old  # still draining (a worker without requests in flight is gone)
        served_before_release = traffic.ok
        gateway.proxy.release()
        results = in_flight.join()
        wait_for(lambda: not set(gateway.workers()) & old, 60, "the old workers did not exit", gateway.log_text)
        time.sleep(0.5)  # a little traffic on the new workers alone
    finally:
        traffic.stop()
    assert sorted(map(str, results)) == ["(200, True)"] * 4, gateway.log_text()[-3000:]
    assert traffic.failures == [], traffic.failures[:10]
    assert served_before_release > 0 and traffic.ok > served_before_release
    assert len(gateway.workers()) == 2
    assert gateway.token().status_code == 200


# ---- a worker killed ----------------------------------------------------------------------


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(gateway: Gateway) -> None:
    gateway.start()
    victim, survivor = gateway.workers()
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(gateway.listeners()) == 2 and victim not in gateway.workers(),
        30,
        "the worker was not replaced",
        gateway.log_text,
    )
    assert survivor in gateway.workers()
    for _ in range(20):  # new connections, so both workers serve some
        assert requests.get(gateway.base + "/jwks", headers={"Connection": "close"}, timeout=10).status_code == 200
        assert gateway.token().status_code == 200
    # A worker replaced once is no reason for a failed exit later.
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(timeout=GRACEFUL_TIMEOUT) == 0, gateway.log_text()[-3000:]


def test_a_crash_loop_stops_the_whole_server_with_exit_1(gateway: Gateway) -> None:
    gateway.start()
    first = gateway.workers()[0]
    os.kill(first, signal.SIGKILL)
    wait_for(
        lambda: len(gateway.listeners()) == 2 and first not in gateway.workers(),
        30,
        "the worker was not replaced",
        gateway.log_text,
    )
    pid = int(re.findall(r"Spawning worker-\d with PID: (\d+)", gateway.log_text())[-1])
    os.kill(pid, signal.SIGKILL)  # the replacement dies at once too
    assert gateway.proc is not None
    assert gateway.proc.wait(timeout=GRACEFUL_TIMEOUT) == 1
    assert "crash loop" in gateway.log_text()
    assert subprocess.run(["pgrep", "-g", str(gateway.proc.pid)], capture_output=True).returncode == 1


# ---- a wedged worker --------------------------------------------------------------------------


def test_wedged_workers_end_themselves_and_are_replaced(gateway: Gateway) -> None:
    gateway.start("--timeout", "2", command=[sys.executable, "-c", WEDGEABLE_SSO])
    wedged = gateway.workers()
    for pid in wedged:
        os.kill(pid, signal.SIGUSR1)  # each now holds the GIL in a regex for hours
    started = time.monotonic()
    wait_for(
        lambda: not set(gateway.workers()) & set(wedged) and len(gateway.listeners()) == 2,
        40,
        "the wedged workers were not replaced",
        gateway.log_text,
    )
    assert time.monotonic() - started < 20
    assert gateway.token().status_code == 200
    assert requests.get(gateway.base + "/jwks", timeout=10).status_code == 200
    # Each wedged worker wrote every thread's traceback before ending itself: its own
    # notifier (logout deliveries, expired sessions) and its own watchdog were running.
    dumps = gateway.log_text().split("Timeout (0:00:02)!")[1:]
    assert len(dumps) == 2, gateway.log_text()[-4000:]
    for dump in dumps:
        assert "sso/logout.py" in dump and "sso/watchdog.py" in dump and "in <lambda>" in dump


# ---- metrics, settings ------------------------------------------------------------------------


def test_each_worker_writes_its_own_metrics_and_metrics_adds_them_up(gateway: Gateway) -> None:
    gateway.start()
    workers = gateway.workers()
    for _ in range(30):  # new connections: spread over both workers
        assert requests.get(gateway.base + "/healthz", headers={"Connection": "close"}, timeout=10).status_code == 200
    text = requests.get(gateway.base + "/metrics", timeout=10).text
    counted = re.search(r'sso_http_requests_total\{endpoint="ops.healthz",method="GET",status="200"\} (\S+)', text)
    assert counted is not None and float(counted.group(1)) == 30.0
    files = os.listdir(gateway.env["PROMETHEUS_MULTIPROC_DIR"])
    assert {f"counter_{pid}.db" for pid in workers} <= set(files), files


def test_the_workers_use_the_config_file_the_master_validated(gateway: Gateway, tmp_path: Path) -> None:
    # Everything in a --config file, nothing in SSO_* variables: the workers must not
    # fall back to the embedded defaults (SQLite, the in-process store).
    config = tmp_path / "gateway.toml"
    given = {k[4:].lower(): v for k, v in gateway.env.items() if k.startswith("SSO_")}
    toml = [
        f"{key} = {value}" if value.isdigit() or value == "true" else f'{key} = "{value}"'
        for key, value in given.items()
    ]
    config.write_text("\n".join(toml) + "\n")
    gateway.env = {k: v for k, v in gateway.env.items() if not k.startswith("SSO_")}
    gateway.start(command=[str(SSO), "--config", str(config)])
    assert gateway.token().status_code == 200  # the portal registered in PostgreSQL is known to the workers
    in_flight = InFlight(gateway, 2)  # and their queries go through the configured database address
    gateway.proxy.release()
    assert sorted(map(str, in_flight.join())) == ["(200, True)"] * 2


# ---- the command line -------------------------------------------------------------------------


def test_granian_is_the_default_and_gunicorn_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sso import server
    from sso.cli import main

    for name in [k for k in os.environ if k.startswith(("SSO_", "PROMETHEUS_"))]:
        monkeypatch.delenv(name)
    served: list[str] = []
    monkeypatch.setattr(server, "run", lambda *args, **kwargs: served.append("granian"))
    monkeypatch.setattr(server, "run_gunicorn", lambda *args, **kwargs: served.append("gunicorn"))
    env = {"SSO_ISSUER": "https://sso.example.gov.cn", "SSO_INSTANCE_PATH": str(tmp_path)}
    runner = CliRunner()
    for args, expected in ((["--production"], "granian"), (["--production", "--server", "gunicorn"], "gunicorn")):
        result = runner.invoke(main, ["serve", *args, "--allow-embedded"], env=env)
        assert result.exit_code == 0, result.output
        assert served.pop() == expected
    # --server, like --workers, means something only with --production.
    for value in ("granian", "gunicorn"):
        refused = runner.invoke(main, ["serve", "--server", value], env=env)
        assert refused.exit_code == 2 and "apply only with --production" in refused.output
    assert served == []
    assert "[default: granian]" in " ".join(runner.invoke(main, ["serve", "--help"]).output.split())
