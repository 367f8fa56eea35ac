"""The SQLite store's credentials on disk: encrypted with a secret key, and deleted for good.

Every check reads the raw bytes of every file of the database (the file, its ``-wal`` and
``-shm``) and looks for the key in them.
"""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
import subprocess
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import wingspan
from wingspan import ConfigError, Credential, SessionRecord, StoreError
from wingspan.testing import make_runtime


def new_secret_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def new_api_key() -> str:
    return "sk-" + secrets.token_hex(20)


async def open_sqlite(path: Path, secret_key: str | None = None, **stores: Any) -> wingspan.Store:
    if secret_key is not None:
        stores["secret_key"] = secret_key
    return await make_runtime(stores=stores).open_store(f"sqlite://{path}")


def database_bytes(path: Path) -> dict[str, bytes]:
    """The raw bytes of every file of the database at ``path``."""
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}


def shown(error: BaseException) -> str:
    """What a user sees of ``error``: its traceback, with the errors it was raised from."""
    return "".join(traceback.format_exception(error))


def files_holding(path: Path, secret: str) -> list[str]:
    return sorted(n for n, data in database_bytes(path).items() if secret.encode() in data)


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WINGSPAN_SECRET_KEY", raising=False)


# --- encryption at rest --------------------------------------------------------------------


async def test_with_a_secret_key_no_file_of_the_database_holds_a_key(tmp_path: Path) -> None:
    path, secret_key = tmp_path / "w.db", new_secret_key()
    keys = {"anthropic": new_api_key(), "openai": new_api_key()}
    replaced = new_api_key()
    store = await open_sqlite(path, secret_key)
    try:
        await store.set_credential("openai", Credential(key=replaced))
        for provider, key in keys.items():
            await store.set_credential(provider, Credential(key=key, base_url="http://proxy/v1"))
        await store.create_session(SessionRecord(id="s"))
        assert sorted(database_bytes(path)) == ["w.db", "w.db-shm", "w.db-wal"]
        for key in [*keys.values(), replaced, secret_key]:
            assert files_holding(path, key) == []
        assert await store.get_credential("anthropic") == Credential(
            key=keys["anthropic"], base_url="http://proxy/v1"
        )
        assert await store.list_credentials() == {"anthropic": "api_key", "openai": "api_key"}
    finally:
        await store.close()
    for key in [*keys.values(), replaced, secret_key]:
        assert files_holding(path, key) == []
    store = await open_sqlite(path, secret_key)  # the same key opens them again
    try:
        assert (await store.get_credential("openai")) == Credential(
            key=keys["openai"], base_url="http://proxy/v1"
        )
    finally:
        await store.close()


async def test_keys_stored_in_the_clear_are_encrypted_when_a_key_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, secret_key, api_key = tmp_path / "w.db", new_secret_key(), new_api_key()
    store = await open_sqlite(path)
    await store.set_credential("anthropic", Credential(key=api_key))
    await store.close()
    assert files_holding(path, api_key) == ["w.db"]  # without a key, as it was given
    monkeypatch.setenv("WINGSPAN_SECRET_KEY", secret_key)  # read when the store opens
    store = await open_sqlite(path)
    try:
        assert files_holding(path, api_key) == []
        assert await store.get_credential("anthropic") == Credential(key=api_key)
    finally:
        await store.close()
    assert files_holding(path, api_key) == []


async def test_encrypted_keys_without_the_secret_key_are_a_clear_error(tmp_path: Path) -> None:
    path, api_key = tmp_path / "w.db", new_api_key()
    store = await open_sqlite(path, new_secret_key())
    await store.set_credential("anthropic", Credential(key=api_key))
    await store.set_credential("openai", Credential(key=new_api_key()))
    await store.close()
    store = await open_sqlite(path)  # no key: the store opens, and works
    try:
        with pytest.raises(StoreError) as caught:
            await store.get_credential("anthropic")
        message = str(caught.value)
        assert "'anthropic'" in message and "encrypted" in message
        assert "set WINGSPAN_SECRET_KEY" in message and "the key it was stored with" in message
        assert "cryptography" not in shown(caught.value)
        assert await store.list_credentials() == {"anthropic": "api_key", "openai": "api_key"}
        assert await store.get_credential("ollama") is None
        assert await store.delete_credential("openai")
        await store.set_credential("ollama", Credential(key="plain"))
        assert await store.get_credential("ollama") == Credential(key="plain")
        await store.create_session(SessionRecord(id="s"))
        assert (await store.get_session("s")).message_count == 0
    finally:
        await store.close()


async def test_the_wrong_secret_key_is_a_clear_error(tmp_path: Path) -> None:
    path, api_key = tmp_path / "w.db", new_api_key()
    store = await open_sqlite(path, new_secret_key())
    await store.set_credential("anthropic", Credential(key=api_key))
    await store.close()
    store = await open_sqlite(path, new_secret_key())
    try:
        with pytest.raises(StoreError) as caught:
            await store.get_credential("anthropic")
        message = str(caught.value)
        assert "'anthropic'" in message and "cannot be decrypted" in message
        assert "set WINGSPAN_SECRET_KEY" in message and "the key it was stored with" in message
        assert "cryptography" not in shown(caught.value)
        assert await store.list_credentials() == {"anthropic": "api_key"}
        # Setting it again seals it with the key now configured.
        await store.set_credential("anthropic", Credential(key=api_key))
        assert await store.get_credential("anthropic") == Credential(key=api_key)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "change",
    ["UPDATE credentials SET provider = 'openai'", "UPDATE credentials SET base_url = 'http://evil'"],
)
async def test_a_sealed_key_opens_only_in_its_own_row(tmp_path: Path, change: str) -> None:
    path, secret_key = tmp_path / "w.db", new_secret_key()
    store = await open_sqlite(path, secret_key)
    await store.set_credential("anthropic", Credential(key=new_api_key(), base_url="http://a"))
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute(change)
    db.close()
    store = await open_sqlite(path, secret_key)
    try:
        provider = next(iter(await store.list_credentials()))
        with pytest.raises(StoreError, match=f"'{provider}' cannot be decrypted"):
            await store.get_credential(provider)
    finally:
        await store.close()


async def test_the_store_setting_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, secret_key = tmp_path / "w.db", new_secret_key()
    monkeypatch.setenv("WINGSPAN_SECRET_KEY", "not a key at all")
    store = await open_sqlite(path, secret_key)
    try:
        await store.set_credential("anthropic", Credential(key="sk-1"))
    finally:
        await store.close()
    monkeypatch.setenv("WINGSPAN_SECRET_KEY", secret_key)
    store = await open_sqlite(path)
    try:
        assert await store.get_credential("anthropic") == Credential(key="sk-1")
    finally:
        await store.close()


_ENV = "the environment variable WINGSPAN_SECRET_KEY"
_SETTING = "the store setting 'secret_key'"


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (_ENV, "too-short"),
        (_SETTING, "too-short"),
        (_ENV, "!" * 44),
        (_SETTING, base64.urlsafe_b64encode(b"k" * 16).decode()),  # AES-128's size
        (_ENV, base64.urlsafe_b64encode(b"k" * 33).decode()),
        (_SETTING, 12345),
    ],
)
async def test_a_malformed_secret_key_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, value: Any
) -> None:
    stores: Mapping[str, Any] = {}
    if where == _ENV:
        monkeypatch.setenv("WINGSPAN_SECRET_KEY", value)
    else:
        stores = {"secret_key": value}
    with pytest.raises(ConfigError) as caught:
        await open_sqlite(tmp_path / "w.db", **stores)
    message = str(caught.value)
    assert message.startswith(where)
    assert "32 random bytes in URL-safe base64" in message
    assert "secrets.token_bytes(32)" in message  # how to make one
    assert str(value) not in message
    assert not (tmp_path / "w.db").exists()


async def test_a_key_without_its_padding_is_accepted(tmp_path: Path) -> None:
    secret_key = new_secret_key()
    store = await open_sqlite(tmp_path / "w.db", secret_key.rstrip("="))
    try:
        await store.set_credential("anthropic", Credential(key="sk-1"))
    finally:
        await store.close()
    store = await open_sqlite(tmp_path / "w.db", f" {secret_key}\n")
    try:
        assert await store.get_credential("anthropic") == Credential(key="sk-1")
    finally:
        await store.close()


def _modules_loaded_by(code: str, env: Mapping[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(env),
        timeout=60,
    )
    return out.stdout.strip()


@pytest.mark.parametrize("with_key", [False, True])
def test_cryptography_is_imported_only_when_a_key_is_configured(
    tmp_path: Path, with_key: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINGSPAN_")}
    if with_key:
        env["WINGSPAN_SECRET_KEY"] = new_secret_key()
    code = (
        "import asyncio, sys, wingspan\n"
        "wingspan.list_plugins()\n"
        "async def main():\n"
        f"    store = await wingspan.open_store('sqlite://{tmp_path}/w.db')\n"
        "    await store.set_credential('x', wingspan.Credential(key='k'))\n"
        "    assert (await store.get_credential('x')).key == 'k'\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
        "print('cryptography' in sys.modules)\n"
    )
    assert _modules_loaded_by(code, env) == str(with_key)


# --- deleted keys do not linger ------------------------------------------------------------


@pytest.mark.parametrize("folded", [False, True], ids=["key in the log", "key in the file"])
async def test_a_deleted_or_replaced_key_is_in_no_file_of_the_database(
    tmp_path: Path, folded: bool
) -> None:
    path = tmp_path / "w.db"
    deleted, replaced, kept = new_api_key(), new_api_key(), new_api_key()
    store = await open_sqlite(path)
    try:
        await store.set_credential("anthropic", Credential(key=deleted))
        await store.set_credential("openai", Credential(key=replaced))
        await store.create_session(SessionRecord(id="s"))
        if folded:  # reopen: closing copies the log into the file
            await store.close()
            store = await open_sqlite(path)
        assert files_holding(path, deleted) != [] and files_holding(path, replaced) != []
        assert await store.delete_credential("anthropic")
        assert files_holding(path, deleted) == []
        await store.set_credential("openai", Credential(key=kept))
        assert files_holding(path, replaced) == []
        assert await store.get_credential("openai") == Credential(key=kept)
        assert (await store.get_session("s")).id == "s"
    finally:
        await store.close()
    assert files_holding(path, deleted) == files_holding(path, replaced) == []
    assert files_holding(path, kept) == ["w.db"]
