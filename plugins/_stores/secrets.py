"""Encryption at rest of stored credentials: the operator's secret key and the cipher.

Reading the key needs only :mod:`base64`; :class:`Cipher` imports ``cryptography``, so it
loads only when a key is configured.

A sealed credential is one ``BLOB``: a format byte, then the rest as that format defines it.
Format 1 is AES-256-GCM: a random 96-bit nonce, then the ciphertext of the key with its
16-byte tag. The associated data is every column of the row kept in the clear (provider,
type, base URL), so a row moved to another provider, or pointed at another endpoint, fails
to decrypt instead of sending the key elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from typing import Any

from wingspan import ConfigError, Credential, StoreError

#: The environment variable holding the secret key when the store settings have none.
SECRET_KEY_ENV = "WINGSPAN_SECRET_KEY"
#: The store settings key holding the secret key.
SECRET_KEY_SETTING = "secret_key"
#: How to make a key, for docs and error messages.
MAKE_KEY = (
    'python -c "import base64,secrets;'
    'print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
)
_SET_THE_KEY = (
    f"set {SECRET_KEY_ENV} (or the store setting {SECRET_KEY_SETTING!r}) to the key it was "
    "stored with"
)
#: The format byte of AES-256-GCM with a 96-bit nonce.
AES_GCM = 1
_NONCE = 12


def load_key(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> bytes | None:
    """The secret key: ``settings["secret_key"]``, else ``$WINGSPAN_SECRET_KEY``; ``None``
    when neither is set (or both are empty).

    :raises ConfigError: for a value that is not 32 bytes in URL-safe base64, naming where
        it came from.
    """
    value = settings.get(SECRET_KEY_SETTING)
    source = f"the store setting {SECRET_KEY_SETTING!r}"
    if value is None or value == "":
        value = (os.environ if environ is None else environ).get(SECRET_KEY_ENV, "")
        source = f"the environment variable {SECRET_KEY_ENV}"
        if not value:
            return None
    text = value.strip() if isinstance(value, str) else ""
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        # Never echo the value: it may be a real key pasted into the wrong place.
        raise ConfigError(
            f"{source} is not a valid secret key: a key is 32 random bytes in URL-safe "
            f"base64 (44 characters, ending in '='); make one with: {MAKE_KEY}"
        )
    return key


def associated_data(provider: str, kind: str, base_url: str | None) -> bytes:
    # Part of format 1: changing it makes every key sealed so far unreadable.
    return json.dumps(["wingspan credential", provider, kind, base_url]).encode()


class Cipher:
    """Seals and unseals credential keys with the operator's secret key."""

    def __init__(self, key: bytes) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise ConfigError(
                "encrypting credentials needs the 'cryptography' package (a dependency of "
                "wingspan); install it with: pip install 'cryptography>=42'"
            ) from None
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "<Cipher AES-256-GCM>"

    def seal(self, provider: str, kind: str, base_url: str | None, key: str) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, key.encode(), associated_data(provider, kind, base_url))
        return bytes((AES_GCM,)) + nonce + sealed

    def unseal(self, provider: str, kind: str, base_url: str | None, sealed: bytes) -> str:
        """The key sealed in ``sealed``.

        :raises StoreError: when it was sealed with another key, or its row was altered.
        """
        from cryptography.exceptions import InvalidTag

        check_format(provider, sealed)
        nonce, body = sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :]
        try:
            plain = self._aead.decrypt(nonce, body, associated_data(provider, kind, base_url))
        except InvalidTag:
            raise StoreError(
                f"the stored credential of provider {provider!r} cannot be decrypted with the "
                "configured secret key: it was stored with another key (or its row was "
                f"altered); {_SET_THE_KEY}, or set the credential again"
            ) from None
        return plain.decode()


def check_format(provider: str, sealed: bytes) -> None:
    if not sealed or sealed[0] != AES_GCM:
        version = sealed[0] if sealed else "none"
        raise StoreError(
            f"the stored credential of provider {provider!r} is sealed in a format this "
            f"wingspan does not know ({version}); upgrade wingspan, or set the credential again"
        )
    if len(sealed) < 1 + _NONCE + 16:
        raise StoreError(
            f"the stored credential of provider {provider!r} is damaged; set it again"
        )


def no_key_error(provider: str) -> StoreError:
    return StoreError(
        f"the stored credential of provider {provider!r} is encrypted and no secret key is "
        f"configured; {_SET_THE_KEY}"
    )


def key_columns(
    cipher: Cipher | None, provider: str, credential: Credential
) -> tuple[str | None, bytes | None]:
    """The ``(key, sealed)`` columns of ``credential``: its key sealed with ``cipher`` when
    there is one, else as it is."""
    if cipher is None:
        return credential.key, None
    return None, cipher.seal(provider, credential.type, credential.base_url, credential.key)


def stored_credential(
    cipher: Cipher | None, provider: str,
    row: tuple[str, str | None, str | None, bytes | None] | None,
) -> Credential | None:
    """The credential of a stored ``(type, base_url, key, sealed)`` row, its key unsealed.

    :raises StoreError: when it is sealed and no key, or another one, is configured.
    """
    if row is None:
        return None
    kind, base_url, key, sealed = row
    if key is None:
        assert sealed is not None  # the tables' CHECK
        if cipher is None:
            check_format(provider, sealed)
            raise no_key_error(provider)
        key = cipher.unseal(provider, kind, base_url, sealed)
    return Credential(type=kind, key=key, base_url=base_url)
