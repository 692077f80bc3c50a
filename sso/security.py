"""Response hardening applied to every response: framing, caching, sniffing, referrers."""

from __future__ import annotations

from flask import Flask, Response

# Pages use only our own static files: no external CDN, no inline script.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def init_app(app: Flask) -> None:
    @app.after_request
    def _harden(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        if response.mimetype == "text/html":
            headers.setdefault("Content-Security-Policy", CSP)
            headers.setdefault("X-Frame-Options", "DENY")
            # Pages carry CSRF tokens and personal data: never cached anywhere.
            headers.setdefault("Cache-Control", "no-store")
        return response
