"""Response hardening applied to every response: framing, caching, sniffing, referrers."""

from __future__ import annotations

from flask import Flask, Response

# Pages use only our own static files: no external CDN, no inline script.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

# On every response, HTML or not (sso.oidc.lane adds them to the responses it serves).
EVERY_RESPONSE = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"))
_HTML_HEADERS = (
    *EVERY_RESPONSE,
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    # Pages carry CSRF tokens and personal data: never cached anywhere.
    ("Cache-Control", "no-store"),
)


def missing(present: set[str], mimetype: str | None) -> list[tuple[str, str]]:
    """The hardening headers a response of ``mimetype`` lacks (``present``: its header names, lower case)."""
    wanted = _HTML_HEADERS if mimetype == "text/html" else EVERY_RESPONSE
    return [(name, value) for name, value in wanted if name.lower() not in present]


def init_app(app: Flask) -> None:
    @app.after_request
    def _harden(response: Response) -> Response:
        headers = response.headers
        # One pass over the names, then appends (setdefault scans the list twice per header).
        for name, value in missing({name.lower() for name in headers.keys()}, response.mimetype):
            headers.add(name, value)
        return response
