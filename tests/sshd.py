"""A real OpenSSH server for the SSH tests: its own config, host key and port on 127.0.0.1.

As root (CI), sshd runs with a temporary config and logs a dedicated throwaway account in
(`ikomassh`, created when missing, password set here, sudo with that password); the machine's own
sshd and its config are never touched. Started and stopped by the test (tests/processes.py), the log
shown when it does not come up.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import processes
from tests.support import free_port

SSHD = "/usr/sbin/sshd"
USER = "ikomassh"
# throwaway secrets of the throwaway account; the secrets tests grep the database files for them
PASSWORD = "Pw-ikomassh-7Qz9rT2m"
PASSPHRASE = "Kp-ikomassh-4Wv8nL1x"
SUDO_GROUP_FILE = "/etc/sudoers.d/ikomassh"


@dataclass
class Sshd:
    port: int
    host_key: Path
    private_key: str  # the account's authorized key (OpenSSH format, passphrase `passphrase`)
    passphrase: str
    directory: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def fingerprint(self) -> str:
        out = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{self.host_key}.pub"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.split()[1]

    def replace_host_key(self) -> None:
        """A reinstalled machine: a new host key, sshd restarted on the same port."""
        processes.stop(self.proc)
        self.host_key.unlink()
        Path(f"{self.host_key}.pub").unlink()
        _keygen(self.host_key, "")
        self.proc = _start(self.directory, self.port, self.log)


def available() -> bool:
    return os.geteuid() == 0 and Path(SSHD).exists() and shutil.which("ssh-keygen") is not None


def require() -> None:
    if not available():
        if os.environ.get("CI"):
            pytest.fail("the SSH tests need root and openssh-server (.ci/run installs it)")
        pytest.skip("the SSH tests need root and openssh-server (apt-get install openssh-server)")


def _keygen(path: Path, passphrase: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "ikoma-test", "-f", str(path)],
        check=True,
    )


def _ensure_account() -> None:
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], check=False, capture_output=True)
    subprocess.run(["chpasswd"], input=f"{USER}:{PASSWORD}\n", text=True, check=True)
    if shutil.which("sudo") and not Path(SUDO_GROUP_FILE).exists():
        Path(SUDO_GROUP_FILE).write_text(f"{USER} ALL=(ALL) ALL\n")
        os.chmod(SUDO_GROUP_FILE, 0o440)


def _start(directory: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    proc = processes.spawn(
        [SSHD, "-D", "-e", "-f", str(directory / "sshd_config"), "-p", str(port)], env={}, log_path=log
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise processes.StartError(f"sshd exited with {proc.returncode}:\n{processes.read_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return proc
        except OSError:
            time.sleep(0.1)
    processes.kill(proc)
    raise processes.StartError(f"sshd did not listen on {port} in 60 s:\n{processes.read_tail(log)}")


@contextmanager
def running_sshd(directory: Path) -> Iterator[Sshd]:
    require()
    directory.mkdir(parents=True, exist_ok=True)
    _ensure_account()
    host_key = directory / "host_ed25519"
    _keygen(host_key, "")
    user_key = directory / "user_ed25519"
    _keygen(user_key, PASSPHRASE)
    # sshd reads the authorized keys as the test account: outside pytest's 0700 temporary tree
    readable = Path(tempfile.mkdtemp(prefix="ikoma-sshd-keys-"))
    readable.chmod(0o755)
    authorized = readable / "authorized_keys"
    shutil.copy(f"{user_key}.pub", authorized)
    authorized.chmod(0o644)
    (directory / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PasswordAuthentication yes\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin no\n"
        f"AllowUsers {USER}\n"
        "MaxStartups 200:30:400\n"
        "MaxSessions 100\n"
        "LogLevel VERBOSE\n"
    )
    port = free_port()
    log = directory / "sshd.log"
    proc = _start(directory, port, log)
    server = Sshd(port, host_key, user_key.read_text(), PASSPHRASE, directory, proc, log)
    try:
        yield server
    finally:
        processes.stop(server.proc)
        shutil.rmtree(readable, ignore_errors=True)
