"""OAuth2 requests built from the issuer, not from the Host header.

Authlib's Flask request uses ``request.url``; ours uses the configured issuer plus
the path, so a spoofed ``Host`` or ``X-Forwarded-Host`` can change nothing, and a
TLS-terminating proxy in front of us does not look like plain http.  The same
class rebuilds a stored authorization request when a login or consent resumes it.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property, lru_cache
from urllib.parse import urlencode

from authlib.common.security import is_secure_transport
from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from flask import current_app, request
from werkzeug.datastructures import CombinedMultiDict, MultiDict


class GatewayPayload(OAuth2Payload):
    def __init__(self, values: MultiDict | CombinedMultiDict) -> None:  # type: ignore[type-arg]
        self._values = values

    @property
    def data(self):  # type: ignore[no-untyped-def]
        return self._values

    @cached_property
    def datalist(self) -> defaultdict[str, list[str]]:
        # Built once per request (Authlib and our checks ask for it several times); a
        # request's parameters do not change.
        out: defaultdict[str, list[str]] = defaultdict(list)
        for key in self._values:
            out[key].extend(self._values.getlist(key))
        return out


@lru_cache(maxsize=8)
def _secure_issuer(issuer: str) -> bool:
    return is_secure_transport(issuer)


class GatewayRequest(OAuth2Request):
    def __init__(
        self,
        method: str,
        path: str,
        args: MultiDict,  # type: ignore[type-arg]
        form: MultiDict,  # type: ignore[type-arg]
        headers: dict[str, str] | object,
    ) -> None:
        issuer = current_app.extensions["sso"].settings.issuer
        # OAuth2Request.__init__ parses the URI on every request to check its transport;
        # ours always starts with the issuer, so that answer is computed once per issuer.
        if not _secure_issuer(issuer):
            raise InsecureTransportError()
        self.method = method
        self._issuer, self._path = issuer, path
        # Not "headers or {}": the truth test of EnvironHeaders walks the whole environ.
        self.headers = headers if headers is not None else {}
        self._body = None
        self.client = self.auth_method = self.user = None
        self.authorization_code = self.refresh_token = self.credential = None
        self._scope = None
        self._args = args
        self._form = form
        self.payload = GatewayPayload(CombinedMultiDict([args, form]))

    @cached_property
    def uri(self) -> str:
        """The request's URL under the issuer (built when asked: few requests ask)."""
        query = urlencode(list(self._args.items(multi=True))) if self._args else ""
        return self._issuer + self._path + ("?" + query if query else "")

    @property
    def args(self):  # type: ignore[no-untyped-def]
        return self._args

    @property
    def form(self):  # type: ignore[no-untyped-def]
        return self._form

    @classmethod
    def from_flask(cls) -> GatewayRequest:
        return cls(request.method, request.path, request.args, request.form, request.headers)

    @classmethod
    def from_stored(cls, pairs: list[list[str]]) -> GatewayRequest:
        """An authorization request saved while the user signed in or consented."""
        return cls("GET", "/authorize", MultiDict([(k, v) for k, v in pairs]), MultiDict(), {})
