"""SMS one-time codes: a sender interface and its development outbox.

A province plugs in its SMS gateway as another ``SmsSender``.  The development
sender appends each message to ``<instance>/sms-outbox.jsonl`` so the demo and
the tests can read the code a real phone would have received.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Protocol


class SmsSender(Protocol):
    def send(self, phone: str, text: str) -> None:
        """Deliver ``text`` to ``phone``; raise on failure."""


class OutboxSender:
    """Development sender: one JSON line per message in an outbox file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def send(self, phone: str, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"to": phone, "text": text, "at": int(time.time())}, ensure_ascii=False)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def messages(self, phone: str | None = None) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]
        return [r for r in rows if phone is None or r["to"] == phone]
