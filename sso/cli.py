"""The ``sso`` command line: thin click commands over plain service functions."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask

from .config import ConfigError, load_settings


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def build_app(ctx: click.Context, **overrides: Any) -> Flask:
    from . import create_app

    try:
        settings = load_settings(ctx.obj.get("config"), overrides=overrides)
    except ConfigError as exc:
        _fail(str(exc))
    return create_app(settings)


def with_app(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run the command inside an app context with the schema migrated."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        from .bootstrap import prepare

        app = build_app(ctx)
        prepare(app)
        with app.app_context():
            return func(*args, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2) if as_json else text)


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML config file (or SSO_CONFIG).")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """Unified identity and single sign-on gateway."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


# ---- serving --------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Run the gateway (threaded development server)."""
    from .bootstrap import prepare

    app = build_app(ctx)
    prepare(app)
    click.echo(f"Gateway at {app.extensions['sso'].settings.issuer}")
    app.run(host=host, port=port, threaded=True, use_reloader=False)


@main.command()
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--instance", default="instance", show_default=True, help="Folder for the SQLite file and keys.")
@click.pass_context
def demo(ctx: click.Context, port: int, instance: str) -> None:
    """Run on the embedded default (SQLite + embedded store) with demo data."""
    from .bootstrap import prepare, seed_demo

    app = build_app(
        ctx, issuer=f"http://127.0.0.1:{port}", development=True, demo=True, instance_path=instance
    )
    prepare(app)
    with app.app_context():
        demo_data = seed_demo(app)
    issuer = app.extensions["sso"].settings.issuer
    click.echo("")
    click.echo(f"  Gateway:      {issuer}")
    click.echo(f"  Discovery:    {issuer}/.well-known/openid-configuration")
    click.echo(f"  Demo account: {demo_data['username']} / {demo_data['password']}")
    for client in demo_data["clients"].values():
        click.echo(f"  Demo portal:  client_id={client['client_id']} (secret in {instance}/demo-clients.json)")
    click.echo("")
    app.run(host="127.0.0.1", port=port, threaded=True, use_reloader=False)


# ---- database ------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply schema migrations."""
    from .db import current_revision, upgrade

    app = build_app(ctx)
    url = app.extensions["sso"].settings.resolved_database_url
    upgrade(url, revision)
    click.echo(f"database at revision {current_revision(url)}")


# ---- clients ---------------------------------------------------------------------------


@main.group()
def clients() -> None:
    """Register and manage portals (OAuth clients)."""


def _client_text(data: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in data.items())


@clients.command("create")
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True)
@click.option("--post-logout-redirect-uri", "post_logout", multiple=True)
@click.option("--grant-type", "grant_types", multiple=True)
@click.option("--auth-method", default=None)
@click.option("--public", is_flag=True, help="A public client (PKCE, no secret).")
@click.option("--scope", default="openid profile", show_default=True)
@click.option("--id-token-alg", default="RS256", show_default=True)
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False), help="Public JWKS for private_key_jwt.")
@click.option("--client-id", default=None, help="Choose the client id (default: generated).")
@click.option("--json", "as_json", is_flag=True)
@with_app
def clients_create(
    name: str,
    redirect_uris: tuple[str, ...],
    post_logout: tuple[str, ...],
    grant_types: tuple[str, ...],
    auth_method: str | None,
    public: bool,
    scope: str,
    id_token_alg: str,
    jwks_file: str | None,
    client_id: str | None,
    as_json: bool,
) -> None:
    """Register a portal; prints its client id and (once) its secret."""
    from .clients import ClientError, create_client, describe

    jwks = None
    if jwks_file:
        try:
            jwks = json.loads(Path(jwks_file).read_text())
        except (ValueError, OSError) as exc:
            _fail(f"cannot read JWKS file: {exc}")
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            _fail("the JWKS file must hold an object with a 'keys' list")
    try:
        reg = create_client(
            name=name,
            redirect_uris=list(redirect_uris),
            post_logout_redirect_uris=list(post_logout),
            grant_types=list(grant_types) or None,
            auth_method=auth_method,
            public=public,
            scope=scope,
            id_token_signed_response_alg=id_token_alg,
            jwks=jwks,
            client_id=client_id,
        )
    except ClientError as exc:
        _fail(str(exc))
    data = describe(reg.client)
    if reg.client_secret:
        data["client_secret"] = reg.client_secret
    note = "\n(the secret is shown only this once)" if reg.client_secret else ""
    _emit(data, as_json, _client_text(data) + note)


@clients.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_app
def clients_list(as_json: bool) -> None:
    """List registered portals."""
    from .clients import describe, list_clients

    rows = [describe(c) for c in list_clients()]
    text = "\n".join(
        f"{r['client_id']}\t{'disabled' if r['disabled'] else 'enabled'}\t{r['name']}" for r in rows
    )
    _emit(rows, as_json, text or "no clients")


def _client_command(name: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
    def decorate(func: Callable[..., Any]) -> Any:
        wrapped = with_app(func)
        wrapped = click.option("--json", "as_json", is_flag=True)(wrapped)
        wrapped = click.argument("client_id")(wrapped)
        return clients.command(name, help=help_text)(wrapped)

    return decorate


@_client_command("show", "Show one portal.")
def clients_show(client_id: str, as_json: bool) -> None:
    from .clients import ClientError, describe, get_client

    try:
        data = describe(get_client(client_id))
    except ClientError as exc:
        _fail(str(exc), 1)
    _emit(data, as_json, _client_text(data))


@clients.command("update")
@click.argument("client_id")
@click.option("--name", default=None)
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Replaces the registered list.")
@click.option("--post-logout-redirect-uri", "post_logout", multiple=True, help="Replaces the registered list.")
@click.option("--scope", default=None)
@click.option("--id-token-alg", default=None)
@click.option("--enable", is_flag=True, default=None, help="Re-enable a disabled portal.")
@click.option("--json", "as_json", is_flag=True)
@with_app
def clients_update(
    client_id: str,
    name: str | None,
    redirect_uris: tuple[str, ...],
    post_logout: tuple[str, ...],
    scope: str | None,
    id_token_alg: str | None,
    enable: bool | None,
    as_json: bool,
) -> None:
    """Change a portal's registration."""
    from .clients import ClientError, describe, update_client

    try:
        client = update_client(
            client_id,
            name=name,
            redirect_uris=list(redirect_uris) or None,
            post_logout_redirect_uris=list(post_logout) or None,
            scope=scope,
            id_token_signed_response_alg=id_token_alg,
            enable=True if enable else None,
        )
    except ClientError as exc:
        _fail(str(exc), 1 if "no client" in str(exc) else 2)
    data = describe(client)
    _emit(data, as_json, _client_text(data))


@_client_command("rotate-secret", "Issue a new secret (shown once); the old one stops working.")
def clients_rotate(client_id: str, as_json: bool) -> None:
    from .clients import ClientError, rotate_secret

    try:
        secret = rotate_secret(client_id)
    except ClientError as exc:
        _fail(str(exc), 1 if "no client" in str(exc) else 2)
    _emit({"client_id": client_id, "client_secret": secret}, as_json, f"client_secret: {secret}")


@_client_command("disable", "Disable a portal: it can no longer authorize or get tokens.")
def clients_disable(client_id: str, as_json: bool) -> None:
    from .clients import ClientError, describe, disable_client

    try:
        data = describe(disable_client(client_id))
    except ClientError as exc:
        _fail(str(exc), 1)
    _emit(data, as_json, f"{client_id} disabled")


@_client_command("delete", "Delete a portal's registration.")
def clients_delete(client_id: str, as_json: bool) -> None:
    from .clients import ClientError, delete_client

    try:
        delete_client(client_id)
    except ClientError as exc:
        _fail(str(exc), 1)
    _emit({"client_id": client_id, "deleted": True}, as_json, f"{client_id} deleted")


# ---- keys ------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Signing keys."""


def _key_row(status: Any) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() + "Z" if value else None

    return {
        "kid": status.kid,
        "alg": status.alg,
        "state": status.state,
        "created_at": iso(status.created_at),
        "activates_at": iso(status.activates_at),
        "retired_at": iso(status.retired_at),
        "unpublish_at": iso(status.unpublish_at),
    }


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_app
def keys_list(as_json: bool) -> None:
    """List signing keys and their state (next, active, retired, expired)."""
    from flask import current_app

    rows = [_key_row(s) for s in current_app.extensions["sso"].keys.statuses()]
    text = "\n".join(f"{r['kid']}\t{r['alg']}\t{r['state']}\tactivates {r['activates_at']}" for r in rows)
    _emit(rows, as_json, text)


@keys.command("rotate")
@click.option("--alg", default="RS256", show_default=True, type=click.Choice(["RS256", "ES256"]))
@click.option("--activate-in", type=click.IntRange(min=0), default=None, help="Seconds before the new key signs (default: key_publish_lead).")
@click.option("--json", "as_json", is_flag=True)
@with_app
def keys_rotate(alg: str, activate_in: int | None, as_json: bool) -> None:
    """Publish the next key now; it signs after the publish lead."""
    from flask import current_app

    row = current_app.extensions["sso"].keys.rotate(alg, activate_in)
    data = {"kid": row.kid, "alg": row.alg, "activates_at": row.activates_at.isoformat() + "Z"}
    _emit(data, as_json, f"new {alg} key {row.kid} published; signs from {data['activates_at']}")


# ---- accounts (local connector) ---------------------------------------------------------


@main.group()
def accounts() -> None:
    """Local accounts."""


@accounts.command("create")
@click.option("--username", required=True)
@click.option("--name", "display_name", required=True)
@click.password_option()
@with_app
def accounts_create(username: str, display_name: str, password: str) -> None:
    """Create a local account."""
    from .connectors.local import create_account
    from .db import db
    from .models import Account

    if db.session.execute(db.select(Account).filter_by(username=username)).scalar_one_or_none():
        _fail(f"username {username} is taken")
    account = create_account(username, password, display_name)
    click.echo(f"account {account.username} created")


if __name__ == "__main__":  # pragma: no cover
    main()
