"""RedisStore under outages, against a private redis-server this module controls.

The shared server cannot be stopped from a test, so each test starts its own
throw-away instance on a free port and always kills it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis

from sso.storage import RedisStore, StoreUnavailable

pytestmark = pytest.mark.redis

# Loopback only, and no persistence: a restart must come back empty, like a
# real failover to a fresh replica, and nothing is left on disk.
SERVER_OPTIONS = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")


def unavailable(reason: str) -> NoReturn:
    # Skip on a laptop, fail in CI where a skipped fault test would hide regressions.
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server process that can be stopped, frozen and restarted on the same port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), *SERVER_OPTIONS, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(f"redis-server exited early (port {self.port} taken?)")
                try:
                    probe.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        pytest.fail("redis-server did not become ready within 10 s")
                    time.sleep(0.05)
        finally:
            probe.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # A frozen (SIGSTOP) server would not act on SIGTERM: wake it first.
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, on a free port, in ``workdir``; stopped afterwards."""
    binary = shutil.which("redis-server") or shutil.which("/usr/bin/redis-server")
    if binary is None:
        unavailable("redis-server binary not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    srv = PrivateRedis(binary, workdir)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path) as srv:
        yield srv


def every_operation(store: RedisStore) -> dict[str, Callable[[], Any]]:
    return {
        "put": lambda: store.put("code", "k", {"v": 1}, ttl=60),
        "get": lambda: store.get("code", "k"),
        "consume": lambda: store.consume("code", "k"),
        "delete": lambda: store.delete("code", "k"),
        "add": lambda: store.add("jti", "k", {"v": 1}, ttl=60),
        "touch": lambda: store.touch("code", "k", ttl=60),
        "replace": lambda: store.replace("session", "k", {"v": 1}, ttl=60),
        "replace_and_put": lambda: store.replace_and_put("session", "k", {"v": 1}, 60, ("code", "c", {"v": 2}, 60)),
        "touch_and_put": lambda: store.touch_and_put("session", "k", 60, ("code", "c", {"v": 2}, 60)),
        "incr": lambda: store.incr("rate", "k", ttl=60),
        "set_add": lambda: store.set_add("sids", "k", "m", ttl=60),
        "set_members": lambda: store.set_members("sids", "k"),
        "delete_many": lambda: store.delete_many([("code", "k"), ("rate", "k")]),
        "run_script": lambda: store.run_script("return redis.call('GET', KEYS[1]) or ''", [("code", "k")], []),
        "ping": store.ping,
    }


def assert_fails_closed(op: Callable[[], Any], name: str, limit: float) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        op()
    elapsed = time.monotonic() - started
    # Callers map StoreUnavailable to 503; a leaked redis-py error would be a 500.
    assert not isinstance(info.value, redis.RedisError), name
    assert elapsed < limit, f"{name} took {elapsed:.2f}s to fail"


def assert_works(store: RedisStore) -> None:
    store.put("code", "k", {"v": "恢复"}, ttl=60)
    assert store.get("code", "k") == {"v": "恢复"}
    assert store.consume("code", "k") == {"v": "恢复"}
    assert store.add("jti", "k", {"v": 1}, ttl=60) is True
    # The scripts must be re-sent to a restarted (empty) server.
    assert store.incr("rate", "k", ttl=60) == 1
    store.put("session", "s", {"v": 1}, ttl=60)
    assert store.replace_and_put("session", "s", {"v": 2}, 60, ("code", "c1", {"v": 3}, 60)) is True
    assert store.touch_and_put("session", "s", 60, ("code", "c2", {"v": 4}, 60)) is True
    assert store.consume("code", "c1") == {"v": 3} and store.consume("code", "c2") == {"v": 4}
    store.set_add("sids", "k", "m", ttl=60)
    assert store.set_members("sids", "k") == {"m"}
    store.ping()


def test_stopped_server_every_operation_raises_store_unavailable(server: PrivateRedis) -> None:
    store = RedisStore(server.url)
    try:
        store.put("code", "k", {"v": 1}, ttl=60)  # warm the pool: stale sockets are the hard case
        server.stop()
        for name, op in every_operation(store).items():
            assert_fails_closed(op, name, limit=2.0)
    finally:
        store.close()


def test_same_instance_recovers_after_restart(server: PrivateRedis) -> None:
    store = RedisStore(server.url)
    try:
        assert_works(store)
        server.stop()
        with pytest.raises(StoreUnavailable):
            store.ping()
        server.start()  # same port, empty dataset
        assert_works(store)
    finally:
        store.close()


def test_unresponsive_server_times_out_as_store_unavailable(server: PrivateRedis) -> None:
    store = RedisStore(server.url, socket_timeout=0.5)
    try:
        assert_works(store)
        server.freeze()
        assert_fails_closed(lambda: store.get("code", "k"), "get", limit=1.5)
        assert_fails_closed(lambda: store.incr("rate", "k", ttl=60), "incr", limit=1.5)
        server.thaw()
        store.put("code", "after", {"v": 2}, ttl=60)
        assert store.get("code", "after") == {"v": 2}
    finally:
        store.close()
