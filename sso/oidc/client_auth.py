"""private_key_jwt client authentication (RFC 7523 §2.2, OIDC Core §9).

The assertion's ``jti`` is recorded durably until the assertion expires, so a
replayed assertion is refused even across a restart of the short-lived store.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import current_app
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError

from ..crypto import token_hash
from ..db import db
from ..models import Client, UsedClientAssertion

# An assertion valid for longer than this is refused: it would be a long-lived credential.
MAX_ASSERTION_LIFETIME = 600


class PrivateKeyJWT(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self) -> None:
        super().__init__(validate_jti=True, leeway=30)

    def get_audiences(self) -> list[str]:
        # RFC 7523 §3 item 3: the token endpoint URL or the issuer identifies us.
        issuer = current_app.extensions["sso"].settings.issuer
        return [issuer, issuer + "/token"]

    def resolve_client_public_key(self, client: Client) -> KeySet:
        from authlib.oauth2.rfc6749.errors import InvalidClientError

        if not client.jwks:
            raise InvalidClientError(description="The client has no registered keys.")
        try:
            return KeySet.import_key_set(client.jwks)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidClientError(description="The client's registered keys are invalid.") from exc

    def validate_jti(self, claims: dict[str, Any], jti: Any) -> bool:
        from authlib.oauth2.rfc6749.errors import InvalidClientError

        exp = claims.get("exp")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            return False
        if not isinstance(exp, int) or exp - time.time() > MAX_ASSERTION_LIFETIME:
            raise InvalidClientError(description="The assertion lives too long.")
        row = UsedClientAssertion(
            jti_hash=token_hash(f"{claims['iss']}\x00{jti}"),
            client_id=str(claims["iss"]),
            expires_at=datetime.utcfromtimestamp(exp),
        )
        db.session.add(row)
        try:
            db.session.commit()  # the primary key makes "first use wins" atomic
        except IntegrityError:
            db.session.rollback()
            return False
        return True
