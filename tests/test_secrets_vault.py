"""The encrypted secret store: keys, encryption, rotation and its messages."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from reconciler import store as store_module
from reconciler.errors import SecretError
from reconciler.secrets import (
    KEY_ENV_VAR,
    KEY_FILE_NAME,
    SecretKey,
    SecretResolver,
    SecretVault,
    check_secret_name,
    check_secret_value,
)
from reconciler.store import SCHEMA_VERSION, Store

OPENAI_KEY = "sk-vault-test-4c1d9e7a0b"
KEBOOLA_TOKEN = "1234-56789-vaultTokenPart"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """Return an open state database in a temporary state directory."""
    opened = Store.open(tmp_path / "state")
    yield opened
    opened.close()


def file_vault(store: Store) -> SecretVault:
    """Return a vault whose key comes from the key file, whatever the test env."""
    return SecretVault(store, environ={})


def env_vault(store: Store, key: bytes) -> SecretVault:
    """Return a vault whose key comes from TC_SECRET_KEY."""
    return SecretVault(store, environ={KEY_ENV_VAR: key.decode()})


def database_bytes(store: Store) -> bytes:
    """Return the bytes of the database file and its WAL, where rows live first."""
    data = b""
    for suffix in ("", "-wal"):
        path = Path(str(store.path) + suffix)
        if path.exists():
            data += path.read_bytes()
    return data


class TestStoreSecrets:
    def test_v1_database_migrates_forward(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A schema-1 database gains the secrets table and keeps its jobs."""
        monkeypatch.setattr(store_module, "SCHEMA_VERSION", 1)
        old = Store.open(tmp_path)
        old.insert_job("kept", path="kept.yaml", revision="r1", status="active")
        assert old.schema_version == 1
        assert "secrets" not in old.db.table_names()
        old.close()
        monkeypatch.undo()

        migrated = Store.open(tmp_path)
        try:
            assert migrated.schema_version == SCHEMA_VERSION
            assert SCHEMA_VERSION >= 2
            assert "secrets" in migrated.db.table_names()
            assert list(migrated.jobs()) == ["kept"]
            assert migrated.put_secret("a", "token-a", "openai") is True
        finally:
            migrated.close()

    def test_put_keeps_created_at_and_type(self, store: Store) -> None:
        """Replacing a secret keeps its creation date and, without a type, its type."""
        assert store.put_secret("a", "first", "keboola") is True
        first = store.secret("a")
        assert first is not None
        assert store.put_secret("a", "second", None) is False
        second = store.secret("a")
        assert second is not None
        assert second.ciphertext == "second"
        assert second.type == "keboola"
        assert second.created_at == first.created_at

    def test_delete_reports_existence(self, store: Store) -> None:
        """Deleting returns whether the secret existed."""
        store.put_secret("a", "x", None)
        assert store.delete_secret("a") is True
        assert store.delete_secret("a") is False
        assert store.secrets() == []

    def test_replace_rolls_back_on_error(self, store: Store) -> None:
        """A failing re-encryption leaves every ciphertext as it was."""
        store.put_secret("a", "old-a", None)
        store.put_secret("b", "old-b", None)

        def reencrypt(row: store_module.SecretRow) -> str:
            if row.name == "b":
                raise RuntimeError("stop")
            return "new-" + row.name

        with pytest.raises(RuntimeError):
            store.replace_secret_ciphertexts(reencrypt)
        assert [r.ciphertext for r in store.secrets()] == ["old-a", "old-b"]

    def test_row_repr_hides_ciphertext(self, store: Store) -> None:
        """A logged row shows no token, not even the encrypted one."""
        store.put_secret("a", "gAAAAciphertext", None)
        assert "gAAAAciphertext" not in repr(store.secret("a"))


class TestVaultKeys:
    def test_first_write_creates_private_key_file(self, store: Store) -> None:
        """The key file is created on first write, with mode 0600."""
        vault = file_vault(store)
        key_path = store.path.parent / KEY_FILE_NAME
        assert not key_path.exists()
        vault.put("openai-prod", OPENAI_KEY, "openai")
        assert key_path.stat().st_mode & 0o777 == 0o600
        assert vault.reveal("openai-prod") == OPENAI_KEY

    def test_read_does_not_create_key_file(self, store: Store) -> None:
        """Resolving a missing secret creates no key file."""
        with pytest.raises(SecretError):
            file_vault(store).reveal("absent")
        assert not (store.path.parent / KEY_FILE_NAME).exists()

    def test_value_is_not_in_database_bytes(self, store: Store) -> None:
        """The database contains the Fernet token, never the clear value."""
        file_vault(store).put("keboola-prod", KEBOOLA_TOKEN, "keboola")
        assert KEBOOLA_TOKEN.encode() not in database_bytes(store)
        row = store.secret("keboola-prod")
        assert row is not None
        assert row.ciphertext.startswith("gAAAAA")

    def test_environment_key_is_used(self, store: Store) -> None:
        """With TC_SECRET_KEY set, no key file is created and that key decrypts."""
        key = Fernet.generate_key()
        env_vault(store, key).put("a", OPENAI_KEY)
        assert not (store.path.parent / KEY_FILE_NAME).exists()
        row = store.secret("a")
        assert row is not None
        assert Fernet(key).decrypt(row.ciphertext.encode()).decode() == OPENAI_KEY

    def test_invalid_environment_key_is_named(self, store: Store) -> None:
        """An invalid TC_SECRET_KEY is reported without quoting it."""
        vault = SecretVault(store, environ={KEY_ENV_VAR: "not-a-fernet-key"})
        with pytest.raises(SecretError) as caught:
            vault.put("a", OPENAI_KEY)
        message = str(caught.value)
        assert "TC_SECRET_KEY is not a valid Fernet key" in message
        assert "not-a-fernet-key" not in message

    def test_open_key_file_is_refused(self, store: Store) -> None:
        """A key file readable by others is refused with the chmod that fixes it."""
        vault = file_vault(store)
        vault.put("a", OPENAI_KEY)
        key_path = store.path.parent / KEY_FILE_NAME
        key_path.chmod(0o644)
        with pytest.raises(SecretError) as caught:
            file_vault(store).reveal("a")
        message = str(caught.value)
        assert f"run `chmod 600 {key_path}`" in message
        assert "mode 0644" in message

    def test_wrong_key_names_the_secret(self, store: Store) -> None:
        """A key that does not open a secret names the secret and the fix."""
        env_vault(store, Fernet.generate_key()).put("openai-prod", OPENAI_KEY)
        with pytest.raises(SecretError) as caught:
            env_vault(store, Fernet.generate_key()).reveal("openai-prod")
        message = str(caught.value)
        assert "secret openai-prod cannot be decrypted with the key from" in message
        assert "`tc secret set openai-prod`" in message
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__ or caught.value.__context__ is None

    def test_missing_key_file_is_explained(self, store: Store) -> None:
        """A stored secret without any key names where the key was looked for."""
        file_vault(store).put("a", OPENAI_KEY)
        (store.path.parent / KEY_FILE_NAME).unlink()
        with pytest.raises(SecretError, match="key file .* does not exist"):
            file_vault(store).reveal("a")

    def test_second_key_is_refused(self, store: Store) -> None:
        """Storing under a key that does not open the stored secrets is refused."""
        env_vault(store, Fernet.generate_key()).put("a", OPENAI_KEY)
        with pytest.raises(SecretError, match="does not decrypt secret a"):
            env_vault(store, Fernet.generate_key()).put("b", KEBOOLA_TOKEN)
        assert store.secret("b") is None

    def test_reprs_show_no_key(self, store: Store) -> None:
        """Neither the key nor the vault's repr shows key material."""
        key = Fernet.generate_key()
        vault = env_vault(store, key)
        vault.put("a", OPENAI_KEY)
        assert key.decode() not in repr(vault)
        assert key.decode() not in repr(SecretKey(key, source=KEY_ENV_VAR))


class TestResolver:
    def test_missing_secret_names_fix(self, store: Store) -> None:
        """A missing secret names the field and the command that stores it."""
        resolver = SecretResolver(file_vault(store))
        with pytest.raises(SecretError) as caught:
            resolver.resolve("secret:openai-prod", field="openai.api_key")
        assert str(caught.value) == (
            "openai.api_key: secret openai-prod is not in the secret store; "
            "store it with `tc secret set openai-prod`"
        )

    def test_stored_secret_resolves(self, store: Store) -> None:
        """A stored secret resolves to its value."""
        vault = file_vault(store)
        vault.put("keboola-prod", KEBOOLA_TOKEN)
        resolver = SecretResolver(vault)
        value = resolver.resolve("secret:keboola-prod", field="keboola.token")
        assert value == KEBOOLA_TOKEN

    def test_without_store_says_why(self) -> None:
        """Without a store the message explains that the database is not used."""
        with pytest.raises(SecretError) as caught:
            SecretResolver().resolve("secret:a", field="keboola.token")
        assert "runs without the state database" in str(caught.value)


class TestRotation:
    def test_rotation_replaces_key_file(self, store: Store) -> None:
        """Rotation writes a new key file that opens every secret."""
        vault = file_vault(store)
        vault.put("a", OPENAI_KEY)
        vault.put("b", KEBOOLA_TOKEN)
        key_path = store.path.parent / KEY_FILE_NAME
        old_key = key_path.read_bytes().strip()
        old_ciphertexts = [r.ciphertext for r in store.secrets()]

        rotation = file_vault(store).rotate_key()

        assert rotation.count == 2
        assert rotation.key_file == key_path
        new_key = key_path.read_bytes().strip()
        assert new_key != old_key
        assert key_path.stat().st_mode & 0o777 == 0o600
        assert not key_path.with_name(KEY_FILE_NAME + ".new").exists()
        assert [r.ciphertext for r in store.secrets()] != old_ciphertexts
        fresh = file_vault(store)
        assert fresh.reveal("a") == OPENAI_KEY
        assert fresh.reveal("b") == KEBOOLA_TOKEN
        row = store.secret("a")
        assert row is not None
        assert SecretKey(old_key, source="old").decrypt(row.ciphertext) is None

    def test_environment_key_needs_new_key(self, store: Store) -> None:
        """With TC_SECRET_KEY the new key must be given; it then opens everything."""
        old_key = Fernet.generate_key()
        env_vault(store, old_key).put("a", OPENAI_KEY)
        with pytest.raises(SecretError, match="--new-key-file"):
            env_vault(store, old_key).rotate_key()

        new_key = Fernet.generate_key()
        rotation = env_vault(store, old_key).rotate_key(new_key.decode())

        assert rotation.key_file is None
        assert env_vault(store, new_key).reveal("a") == OPENAI_KEY
        with pytest.raises(SecretError):
            env_vault(store, old_key).reveal("a")

    def test_same_key_is_refused(self, store: Store) -> None:
        """Rotating to the current key is refused."""
        key = Fernet.generate_key()
        env_vault(store, key).put("a", OPENAI_KEY)
        with pytest.raises(SecretError, match="is the current key"):
            env_vault(store, key).rotate_key(key.decode())

    def test_undecryptable_secret_stops_rotation(self, store: Store) -> None:
        """A secret the current key cannot open stops the rotation; nothing changes."""
        vault = file_vault(store)
        vault.put("a", OPENAI_KEY)
        store.put_secret(
            "foreign", Fernet(Fernet.generate_key()).encrypt(b"x").decode(), None
        )
        key_path = store.path.parent / KEY_FILE_NAME
        before_key = key_path.read_bytes()
        before = [r.ciphertext for r in store.secrets()]

        with pytest.raises(SecretError) as caught:
            file_vault(store).rotate_key()

        assert "secret foreign cannot be decrypted" in str(caught.value)
        assert "nothing was changed" in str(caught.value)
        assert [r.ciphertext for r in store.secrets()] == before
        assert key_path.read_bytes() == before_key
        assert not key_path.with_name(KEY_FILE_NAME + ".new").exists()

    def test_interrupted_rotation_is_finished(self, store: Store) -> None:
        """A rotation that committed but did not rename its key file is completed."""
        vault = file_vault(store)
        vault.put("a", OPENAI_KEY)
        key_path = store.path.parent / KEY_FILE_NAME
        new_key = Fernet.generate_key()
        pending = key_path.with_name(KEY_FILE_NAME + ".new")
        descriptor = os.open(pending, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(descriptor, new_key + b"\n")
        os.close(descriptor)
        store.replace_secret_ciphertexts(
            lambda row: Fernet(new_key).encrypt(OPENAI_KEY.encode()).decode()
        )

        assert file_vault(store).reveal("a") == OPENAI_KEY
        assert key_path.read_bytes().strip() == new_key
        assert not pending.exists()

    def test_stale_pending_key_is_ignored(self, store: Store) -> None:
        """A pending key of a rolled-back rotation neither breaks reads nor rotation."""
        file_vault(store).put("a", OPENAI_KEY)
        key_path = store.path.parent / KEY_FILE_NAME
        pending = key_path.with_name(KEY_FILE_NAME + ".new")
        descriptor = os.open(pending, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(descriptor, Fernet.generate_key() + b"\n")
        os.close(descriptor)
        current = key_path.read_bytes()

        assert file_vault(store).reveal("a") == OPENAI_KEY
        assert key_path.read_bytes() == current
        assert file_vault(store).rotate_key().count == 1
        assert not pending.exists()
        assert file_vault(store).reveal("a") == OPENAI_KEY

    def test_running_vault_sees_rotation(self, store: Store) -> None:
        """A vault that read the old key picks up a rotation by another process."""
        reader = file_vault(store)
        reader.put("a", OPENAI_KEY)
        assert reader.reveal("a") == OPENAI_KEY
        file_vault(store).rotate_key()
        assert reader.reveal("a") == OPENAI_KEY


class TestValueChecks:
    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            pytest.param("", "is empty", id="empty"),
            pytest.param("sk-abc\nsk-def", "several lines", id="two-lines"),
            pytest.param(" sk-abc", "starts or ends with a space", id="space"),
            pytest.param("sk-abcé", "printable ASCII", id="non-ascii"),
            pytest.param("sk-" + "a" * 9000, "longer than", id="too-long"),
        ],
    )
    def test_bad_values_are_rejected_unquoted(self, value: str, problem: str) -> None:
        """A value that cannot go into a header is rejected without quoting it."""
        with pytest.raises(SecretError) as caught:
            check_secret_value("openai-prod", value)
        message = str(caught.value)
        assert problem in message
        assert "secret openai-prod" in message
        if value.strip():
            assert value.strip()[:10] not in message

    @pytest.mark.parametrize(
        "name",
        [
            pytest.param("sk-proj-abcdef123", id="openai-key"),
            pytest.param("1234-56789-abcDEF", id="keboola-token"),
        ],
    )
    def test_token_as_name_is_rejected(self, name: str) -> None:
        """A token given as the name is rejected, and the message does not repeat it."""
        with pytest.raises(SecretError) as caught:
            check_secret_name(name)
        assert "looks like a token" in str(caught.value)
        assert name not in str(caught.value)

    def test_invalid_name_is_explained(self) -> None:
        """A name that secret:NAME cannot carry says which characters are allowed."""
        with pytest.raises(SecretError, match="not a valid secret name"):
            check_secret_name("has space")

    def test_unknown_type_is_rejected(self, store: Store) -> None:
        """A type other than openai or keboola is rejected."""
        with pytest.raises(SecretError, match="use openai or keboola"):
            file_vault(store).put("a", OPENAI_KEY, "azure")


def test_sqlite_column_holds_token_only(store: Store) -> None:
    """The ciphertext column of the secrets table contains a Fernet token only."""
    file_vault(store).put("a", OPENAI_KEY, "openai")
    conn = sqlite3.connect(store.path)
    try:
        rows = conn.execute("SELECT name, type, ciphertext FROM secrets").fetchall()
    finally:
        conn.close()
    assert len(rows) == 1
    name, secret_type, ciphertext = rows[0]
    assert (name, secret_type) == ("a", "openai")
    assert OPENAI_KEY not in ciphertext
