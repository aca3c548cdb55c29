"""Pure parts of issue 14: row-bound AES-256-GCM sealing, key rotation, and the remote command line."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from ikoma.services.vault import SecretUnreadable, Vault, add_key_to_file, load_vault
from ikoma.ssh.playbooks import sections
from ikoma.ssh.remote import WRAPPER, remote_command


def test_a_bound_secret_opens_only_with_its_own_row_and_field() -> None:
    vault = Vault([Fernet.generate_key()])
    sealed = vault.seal_bound("s3cret", "server_credentials:a:password")
    assert sealed.startswith(f"ikv2:{vault.current_key_id}:")
    assert "s3cret" not in sealed
    assert vault.unseal_bound(sealed, "server_credentials:a:password") == "s3cret"
    for elsewhere in ("server_credentials:b:password", "server_credentials:a:sudo_password"):
        with pytest.raises(SecretUnreadable):
            vault.unseal_bound(sealed, elsewhere)


def test_an_edited_or_foreign_sealed_value_is_refused_never_decrypted() -> None:
    vault = Vault([Fernet.generate_key()])
    sealed = vault.seal_bound("s3cret", "ctx")
    # a character in the middle of the ciphertext (the last ones may only carry base64 padding bits)
    middle = len(sealed) - 20
    flipped = sealed[:middle] + ("A" if sealed[middle] != "A" else "B") + sealed[middle + 1 :]
    other = Vault([Fernet.generate_key()]).seal_bound("s3cret", "ctx")
    for bad in (flipped, other, "ikv2:nokey", "plain text"):
        with pytest.raises(SecretUnreadable):
            vault.unseal_bound(bad, "ctx")


def test_after_rotation_old_values_open_new_ones_use_the_new_key_and_a_running_vault_rereads_its_file(
    tmp_path: Path,
) -> None:
    running = load_vault(None, tmp_path)
    before = running.seal_bound("old", "ctx")
    add_key_to_file(tmp_path / "encryption.keys")
    rotated = load_vault(None, tmp_path)
    after = rotated.seal_bound("new", "ctx")
    assert rotated.bound_key_id(after) != rotated.bound_key_id(before)
    assert rotated.unseal_bound(before, "ctx") == "old"
    # a process started before the rotation meets the new key id and reads the key file again
    assert running.unseal_bound(after, "ctx") == "new"
    assert (tmp_path / "encryption.keys").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "argv",
    [
        ["echo", "a; rm -rf /", "$(id)", "`id`", "x\r\ny", "--force", "'\""],
        ["printf", "%s", "$HOME", "*", "~", "a b"],
    ],
)
def test_the_remote_command_hands_every_argument_over_as_one_inert_word(argv: list[str]) -> None:
    line = remote_command(argv)
    words = shlex.split(line)  # what a POSIX login shell makes of the line
    assert words[:4] == ["exec", "sh", "-c", WRAPPER]
    assert words[4:] == ["ikoma", *argv]


def test_probe_output_is_split_by_section_header() -> None:
    found = sections("noise\n@@ikoma a\n1\n2\n@@ikoma b\n@@ikoma c\nx\n")
    assert found == {"a": "1\n2\n", "b": "", "c": "x\n"}
