"""Server-side secrets: the key-encryption key, derived keys, secret hashing.

One master key (the KEK) is loaded or generated at start-up; everything else
(Flask's session/CSRF key, the client-secret pepper, the pairwise-subject salt)
is derived from it with HKDF so an operator manages a single secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEK_FILE = "key-encryption-key"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_token(nbytes: int = 32) -> str:
    """A URL-safe random token; 32 bytes = 256 bits of entropy."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """The durable identifier of a bearer secret (codes, refresh tokens): never the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class KeyEncryptionKeyError(Exception):
    pass


def load_or_create_kek(configured: str, instance_path: str) -> bytes:
    """The configured KEK, or a generated one kept under the instance folder (0600)."""
    if configured:
        try:
            key = b64url_decode(configured.strip())
        except (ValueError, TypeError) as exc:
            raise KeyEncryptionKeyError("key_encryption_key is not base64url") from exc
        if len(key) != 32:
            raise KeyEncryptionKeyError("key_encryption_key must decode to 32 bytes")
        return key
    folder = Path(instance_path)
    # The instance folder holds the key file and the SQLite database (password and
    # secret hashes): readable by the service account only.
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / KEK_FILE
    try:
        # O_EXCL: of two processes starting together, one creates the file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = b64url_decode(path.read_text().strip())
        if len(key) != 32:
            raise KeyEncryptionKeyError(f"{path} does not hold a 32-byte key") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(b64url(key))
    return key


def derive_key(master: bytes, purpose: str, length: int = 32) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()
    ).derive(master)


class SecretBox:
    """AES-256-GCM under the KEK; the associated data binds a ciphertext to its row."""

    def __init__(self, kek: bytes, purpose: str = "sso signing-key encryption") -> None:
        self._aead = AESGCM(derive_key(kek, purpose))

    def seal(self, plaintext: bytes, associated: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, plaintext, associated.encode())

    def open(self, sealed: bytes, associated: str) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], associated.encode())


class SecretHasher:
    """Client secrets: HMAC-SHA-256 under a server pepper, compared in constant time.

    Secrets are server-generated with 256 bits of entropy, so a slow password hash
    buys nothing and would cost every token request tens of milliseconds.
    """

    def __init__(self, kek: bytes) -> None:
        self._pepper = derive_key(kek, "sso client-secret pepper")

    def hash(self, secret: str) -> str:
        mac = hmac.new(self._pepper, secret.encode("utf-8"), hashlib.sha256)
        return "hmac-sha256$" + mac.hexdigest()

    def verify(self, secret: str, stored: str | None) -> bool:
        if not stored:
            return False
        return hmac.compare_digest(self.hash(secret), stored)


class IdNumberVault:
    """Resident identity numbers at rest: sealed for use, keyed hash for lookup.

    The hash is keyed (HMAC under a KEK-derived key) because the space of valid
    numbers is small enough to enumerate: a plain SHA-256 would be reversible.
    """

    def __init__(self, kek: bytes) -> None:
        self._mac_key = derive_key(kek, "sso id-number lookup")
        self._box = SecretBox(kek, "sso id-number sealing")

    def lookup_hash(self, number: str) -> str:
        return hmac.new(self._mac_key, number.upper().encode("ascii"), hashlib.sha256).hexdigest()

    def seal(self, number: str, account_id: str) -> bytes:
        return self._box.seal(number.upper().encode("ascii"), "id-number:" + account_id)

    def open(self, sealed: bytes, account_id: str) -> str:
        return self._box.open(sealed, "id-number:" + account_id).decode("ascii")
