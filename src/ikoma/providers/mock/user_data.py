"""The user data (cloud-init) IKOMA gives a new instance so its runner enrols itself, and its reader.

The document is a `#cloud-config` that writes one env file, `/etc/ikoma/runner.env` (0600), and runs
the enrolment from it:

    #cloud-config
    write_files:
    - path: /etc/ikoma/runner.env
      permissions: '0600'
      content: |
        IKOMA_API_URL=https://ikoma.example.com
        IKOMA_BOOTSTRAP_TOKEN=ikb_...
        IKOMA_INSTANCE_ID=5b2c...
    runcmd:
    - [sh, -c, 'set -a && . /etc/ikoma/runner.env && ikoma runner register ... && systemd-run ...']

On a real VM cloud-init does that (the image must carry `ikoma`); the Mock provider reads the same
file out of the document (`read_enrolment`) and starts `ikoma runner` as that command would. The
values are checked to a strict alphabet, so the env file never carries a quote, a space, `$` or a
newline that a shell sourcing it could interpret. The token is a secret: never log this document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

ENV_FILE = "/etc/ikoma/runner.env"
CONFIG_FILE = "/etc/ikoma/runner.json"
MAX_BYTES = 32 * 1024

# one fixed command: the values are read from the env file, never pasted into it
_ENROL = (
    "set -a && . /etc/ikoma/runner.env && "
    "ikoma runner register --config /etc/ikoma/runner.json && "
    "systemd-run --unit=ikoma-runner --property=Restart=always "
    "--setenv=IKOMA_INSTANCE_ID=${IKOMA_INSTANCE_ID} ikoma runner --config /etc/ikoma/runner.json"
)
_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/\-]*)?")
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{16,256}")
_ID = re.compile(r"[A-Za-z0-9\-]{1,64}")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (`|`), so the env file reads as it will be written."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


class UserDataError(ValueError):
    """A document this module cannot write or read; the message never quotes the token."""


@dataclass(frozen=True)
class Enrolment:
    api_url: str
    bootstrap_token: str
    instance_id: str | None

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"Enrolment(api_url={self.api_url!r}, instance_id={self.instance_id!r})"


def render_user_data(api_url: str, bootstrap_token: str, instance_id: str) -> str:
    """The cloud-init document for one instance (what the instance service passes to `create`)."""
    api_url = api_url.rstrip("/")
    if not _URL.fullmatch(api_url):
        raise UserDataError(f"the API URL {api_url!r} is not an http(s) URL of plain characters")
    if not _TOKEN.fullmatch(bootstrap_token):
        raise UserDataError("the bootstrap token has characters outside [A-Za-z0-9_-] or a bad length")
    if not _ID.fullmatch(instance_id):
        raise UserDataError(f"the instance id {instance_id!r} is not a plain id")
    env = "".join(
        f"{key}={value}\n"
        for key, value in (
            ("IKOMA_API_URL", api_url),
            ("IKOMA_BOOTSTRAP_TOKEN", bootstrap_token),
            ("IKOMA_INSTANCE_ID", instance_id),
        )
    )
    document = {
        "write_files": [{"path": ENV_FILE, "permissions": "0600", "owner": "root:root", "content": env}],
        "runcmd": [["sh", "-c", _ENROL]],
    }
    return "#cloud-config\n" + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)


def read_enrolment(document: str) -> Enrolment:
    """The API URL, bootstrap token and instance id a document written by `render_user_data` carries."""
    if len(document.encode()) > MAX_BYTES:
        raise UserDataError(f"user data is larger than {MAX_BYTES} bytes")
    if not document.startswith("#cloud-config"):
        raise UserDataError("user data is not a #cloud-config document")
    try:
        parsed = yaml.safe_load(document)
    except yaml.YAMLError:
        raise UserDataError("user data is not valid YAML") from None
    files = parsed.get("write_files") if isinstance(parsed, dict) else None
    content = next(
        (
            f.get("content")
            for f in files or ()
            if isinstance(f, dict) and f.get("path") == ENV_FILE and isinstance(f.get("content"), str)
        ),
        None,
    )
    if content is None:
        raise UserDataError(f"user data writes no {ENV_FILE}")
    values: dict[str, str] = {}
    for line in content.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    api_url, token = values.get("IKOMA_API_URL", ""), values.get("IKOMA_BOOTSTRAP_TOKEN", "")
    if not _URL.fullmatch(api_url):
        raise UserDataError(f"{ENV_FILE} has no valid IKOMA_API_URL")
    if not _TOKEN.fullmatch(token):
        raise UserDataError(f"{ENV_FILE} has no valid IKOMA_BOOTSTRAP_TOKEN")
    instance_id = values.get("IKOMA_INSTANCE_ID") or None
    if instance_id is not None and not _ID.fullmatch(instance_id):
        raise UserDataError(f"{ENV_FILE} has an invalid IKOMA_INSTANCE_ID")
    return Enrolment(api_url=api_url, bootstrap_token=token, instance_id=instance_id)
