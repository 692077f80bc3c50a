"""sso.watchdog: a worker that stops running Python ends itself, and granian replaces it.

tests/test_server_granian.py wedges the real gateway's workers under ``sso serve --production``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WEDGE = "import re; re.match(r'(a+)+$', 'a' * 64 + 'b')"


def _python(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_a_wedged_process_ends_itself() -> None:
    started = time.monotonic()
    done = _python(f"from sso import watchdog; watchdog.start(1); {WEDGE}")
    assert done.returncode == 1
    assert time.monotonic() - started < 20
    assert "Timeout" in done.stderr and "File" in done.stderr  # every thread's traceback, for the log


def test_a_busy_or_idle_process_is_left_alone() -> None:
    code = (
        "import time\nfrom sso import watchdog\nwatchdog.start(0.5)\nend = time.monotonic() + 2\n"
        "while time.monotonic() < end:\n    sum(range(10000))\ntime.sleep(1)\nprint('alive')"
    )
    done = _python(code)
    assert done.returncode == 0 and "alive" in done.stdout


def test_zero_means_off() -> None:
    from sso import watchdog

    assert watchdog.start(0) is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 1) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return str(response.read().decode())
    except OSError:
        return None


@pytest.mark.skipif(not (BIN / "granian").exists(), reason="granian is not installed")
def test_granian_replaces_a_wedged_worker(tmp_path: Any) -> None:
    port = _free_port()
    env = {**os.environ, "GATEWAY_WORKER_WATCHDOG": "2", "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen(
        [
            str(BIN / "granian"),
            "--interface",
            "wsgi",
            "--workers",
            "1",
            "--blocking-threads",
            "2",
            "--respawn-failed-workers",
            "--no-ws",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "wedge_app:app",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "granian.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        first = None
        while first is None and time.monotonic() < deadline:
            first = _get(base + "/")
            time.sleep(0.2)
        assert first is not None and first.startswith("ok ")
        _get(base + "/hang", timeout=0.5)  # the worker wedges
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline:
            answer = _get(base + "/")
            if answer is not None and answer != first:
                break
            time.sleep(0.5)
        assert answer is not None and answer.startswith("ok ") and answer != first  # a new worker process
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.skipif(not (BIN / "granian").exists(), reason="granian is not installed")
def test_sso_serve_production_with_granian(tmp_path: Any) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSO_", "PROMETHEUS_"))}
    env.update(SSO_ISSUER=f"http://127.0.0.1:{port}", SSO_DEVELOPMENT="true", SSO_INSTANCE_PATH=str(tmp_path))
    proc = subprocess.Popen(
        [str(BIN / "sso"), "serve", "--production", "--server", "granian", "--allow-embedded", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "serve.log").open("wb"),
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        body = None
        while body is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail((tmp_path / "serve.log").read_text()[-2000:])
            body = _get(f"http://127.0.0.1:{port}/.well-known/openid-configuration")
            time.sleep(0.3)
        assert body is not None and f'"issuer":"http://127.0.0.1:{port}"' in body.replace(" ", "")
        assert _get(f"http://127.0.0.1:{port}/jwks") is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) is not None
