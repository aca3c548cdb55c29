"""The SSH options of `ikoma servers create|update` (issue 14): `--ssh user@host[:port]` and secret files.

Secrets are read from files (or `-` for stdin), never from the command line, where any local user could
read them in the process list and the shell keeps them in its history.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

SshOption = Annotated[
    str | None,
    typer.Option("--ssh", metavar="USER@HOST[:PORT]", help="Reach this machine over SSH (agentless)."),
]
PasswordFileOption = Annotated[
    Path | None, typer.Option("--password-file", help="File holding the SSH password ('-': stdin).")
]
KeyFileOption = Annotated[Path | None, typer.Option("--key-file", help="Private key file for SSH.")]
PassphraseFileOption = Annotated[
    Path | None, typer.Option("--key-passphrase-file", help="File holding the private key's passphrase.")
]
SudoPasswordFileOption = Annotated[
    Path | None, typer.Option("--sudo-password-file", help="File holding the sudo password.")
]
AptProxyOption = Annotated[
    str | None,
    typer.Option("--apt-proxy", metavar="URL|direct", help="apt's proxy for this machine, or `direct`."),
]


def parse_target(text: str) -> tuple[str, str, int | None]:
    """`user@host[:port]` → (user, host, port or None)."""
    user, at, rest = text.partition("@")
    if not at or not user or not rest:
        raise typer.BadParameter("expected USER@HOST[:PORT]", param_hint="--ssh")
    host, colon, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if colon and not port.isdigit():
        raise typer.BadParameter("the port must be a number", param_hint="--ssh")
    return user, host if colon else rest, int(port) if colon else None


def _secret(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read the {what} file: {exc.strerror}") from None
    # a password file ends with a newline that is not part of the password; a key keeps its own
    return text if what == "private key" else text.rstrip("\n")


def ssh_fields(
    ssh: str | None,
    password_file: Path | None,
    key_file: Path | None,
    passphrase_file: Path | None,
    sudo_password_file: Path | None,
    apt_proxy: str | None,
) -> dict[str, Any]:
    """The API fields the SSH options give (camelCase), nothing for the options left out."""
    fields: dict[str, Any] = {}
    if ssh is not None:
        user, host, port = parse_target(ssh)
        fields.update(connectionMode="ssh", sshUsername=user, hostname=host)
        if port is not None:
            fields["port"] = port
    for name, path, what in (
        ("sshPassword", password_file, "password"),
        ("sshPrivateKey", key_file, "private key"),
        ("sshKeyPassphrase", passphrase_file, "passphrase"),
        ("sudoPassword", sudo_password_file, "sudo password"),
    ):
        value = _secret(path, what)
        if value is not None:
            fields[name] = value
    if apt_proxy is not None:
        fields.update(
            {"aptProxyMode": "direct", "aptProxyUrl": None}
            if apt_proxy == "direct"
            else {"aptProxyMode": "proxy", "aptProxyUrl": apt_proxy}
        )
    return fields
