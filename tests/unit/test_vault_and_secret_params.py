"""The secrets store (sealing, rotation, tampering) and which order parameters are secret."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ikoma.domain import secret_params as sp
from ikoma.services.vault import KEYS_FILE, SecretUnreadable, Vault, VaultKeyError, load_vault, new_key


def test_a_sealed_value_opens_to_the_plaintext_and_does_not_contain_it() -> None:
    vault = Vault([new_key().encode()])
    sealed = vault.seal("hunter2-very-secret")
    assert "hunter2" not in sealed
    assert vault.unseal(sealed) == "hunter2-very-secret"


def test_values_sealed_with_the_old_key_still_open_after_rotation_and_new_ones_use_the_new_key() -> None:
    old, new = new_key().encode(), new_key().encode()
    sealed_before = Vault([old]).seal("s3cret")
    rotated = Vault([new, old])
    assert rotated.unseal(sealed_before) == "s3cret"
    resealed = rotated.reseal(sealed_before)
    assert Vault([new]).unseal(resealed) == "s3cret"  # the old key is no longer needed
    with pytest.raises(SecretUnreadable):
        Vault([old]).unseal(rotated.seal("fresh"))


def test_tampered_ciphertext_is_refused_never_decrypted_wrongly() -> None:
    vault = Vault([new_key().encode()])
    sealed = vault.seal("s3cret")
    body = sealed[len("ikv1:") :]
    flipped = body[:20] + ("A" if body[20] != "A" else "B") + body[21:]
    with pytest.raises(SecretUnreadable) as refused:
        vault.unseal("ikv1:" + flipped)
    assert refused.value.reason == "secret_unreadable"
    with pytest.raises(SecretUnreadable):
        vault.unseal("plaintext")


def test_a_malformed_key_stops_start_up_with_a_clear_message() -> None:
    with pytest.raises(VaultKeyError, match="Fernet key"):
        Vault([b"not-a-key"])
    with pytest.raises(VaultKeyError):
        load_vault(" , ", Path("/nonexistent"))


def test_the_key_file_is_created_once_owner_only_and_reused(tmp_path: Path) -> None:
    first = load_vault(None, tmp_path)
    sealed = first.seal("x")
    mode = stat.S_IMODE((tmp_path / KEYS_FILE).stat().st_mode)
    assert mode == 0o600
    assert load_vault(None, tmp_path).unseal(sealed) == "x"
    assert [p.name for p in tmp_path.iterdir()] == [KEYS_FILE]  # nothing left aside


def test_environment_keys_take_precedence_over_the_key_file(tmp_path: Path) -> None:
    key = new_key()
    sealed = load_vault(f"{key},{new_key()}", tmp_path).seal("x")
    assert Vault([key.encode()]).unseal(sealed) == "x"
    assert not (tmp_path / KEYS_FILE).exists()


@pytest.mark.parametrize(
    "name", ["password", "dbPassword", "db_password", "apiToken", "sshKey", "private_key", "clientSecret"]
)
def test_secret_looking_names_are_secret(name: str) -> None:
    assert sp.is_secret_name(name)


@pytest.mark.parametrize("name", ["message", "app", "name", "keep", "monkey_count"])
def test_ordinary_names_are_not_secret(name: str) -> None:
    assert not sp.is_secret_name(name)


def test_schema_write_only_or_x_secret_marks_a_parameter_secret() -> None:
    schema = {"properties": {"dsn": {"type": "string", "writeOnly": True}, "pin": {"x-secret": True}}}
    params = {"dsn": "postgres://u:p@h/db", "pin": "1234", "message": "hi", "password": "p"}
    assert sp.secret_names(schema, params) == {"dsn", "pin", "password"}


def test_sealed_params_open_for_the_runner_and_show_a_placeholder_to_everyone_else() -> None:
    vault = Vault([new_key().encode()])
    params = {"password": {"nested": ["p4ss"]}, "message": "hi", "token": None}
    sealed = sp.seal_params(params, sp.secret_names(None, params), vault.seal)
    assert "p4ss" not in str(sealed)
    assert sealed["message"] == "hi"
    assert sealed["token"] is None  # nothing to hide
    assert sp.unseal_params(sealed, vault.unseal) == params
    assert sp.redact_params(sealed) == {"password": sp.PLACEHOLDER, "message": "hi", "token": None}
