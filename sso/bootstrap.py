"""Start-up work outside requests: migrate the schema, make keys, seed the demo."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flask import Flask

from . import clients
from .connectors.local import create_account
from .db import db, upgrade
from .models import Account, Client

DEMO_USER = ("demo", "demo-password-2026", "演示用户")
DEMO_PORTALS = [
    {"client_id": "demo-portal", "name": "示例门户 Demo portal", "port": 5001},
]


def prepare(app: Flask) -> None:
    """Migrate, ensure signing keys, and seed demo data when configured."""
    settings = app.extensions["sso"].settings
    upgrade(settings.resolved_database_url)
    with app.app_context():
        app.extensions["sso"].keys.ensure_keys()
        if settings.demo:
            seed_demo(app)


def seed_demo(app: Flask) -> dict[str, Any]:
    """A demo account and demo portals; portal secrets are written to the instance folder."""
    settings = app.extensions["sso"].settings
    username, password, name = DEMO_USER
    if db.session.execute(db.select(Account).filter_by(username=username)).scalar_one_or_none() is None:
        create_account(username, password, name)
    path = Path(settings.instance_path) / "demo-clients.json"
    saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for portal in DEMO_PORTALS:
        cid = portal["client_id"]
        exists = db.session.execute(db.select(Client).filter_by(client_id=cid)).scalar_one_or_none()
        if exists is not None and cid in saved:
            continue
        if exists is not None:
            db.session.delete(exists)
            db.session.commit()
        base = f"http://127.0.0.1:{portal['port']}"
        registration = clients.create_client(
            name=portal["name"],
            client_id=cid,
            redirect_uris=[base + "/callback"],
            post_logout_redirect_uris=[base + "/"],
        )
        saved[cid] = {"client_id": cid, "client_secret": registration.client_secret, "base_url": base}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(saved, fh, indent=2)
    return {"username": username, "password": password, "clients": saved}
