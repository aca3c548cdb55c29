"""Which order parameters are secrets, and how they look outside the runner that holds the lease.

A parameter is secret when its name says so (`password`, `dbPassword`, `apiToken`, `sshKey`, …) or when
the playbook's JSON schema marks it `writeOnly: true` (or `x-secret: true`). Secret values are sealed at
rest (see `ikoma.services.vault`); every view other than the runner's claim shows `PLACEHOLDER`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

PLACEHOLDER = "********"
SEALED = "$sealed"  # a sealed value at rest is {"$sealed": "<ciphertext>"}

# camelCase and snake_case alike: dbPassword, api_token, sshKey, private_key, clientSecret …
_SECRET_NAME = re.compile(
    r"(password|passwd|passphrase|secret|token|api_?key|ssh_?key|private_?key|credential)", re.IGNORECASE
)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def secret_names(schema: Mapping[str, Any] | None, params: Mapping[str, Any]) -> frozenset[str]:
    """The top-level parameters of `params` to seal: by name, or marked secret by the schema."""
    properties = (schema or {}).get("properties") or {}
    marked = {
        name
        for name, prop in properties.items()
        if isinstance(prop, Mapping) and (prop.get("writeOnly") is True or prop.get("x-secret") is True)
    }
    return frozenset(name for name in params if name in marked or is_secret_name(name))


def is_sealed(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {SEALED} and isinstance(value[SEALED], str)


def seal_params(
    params: Mapping[str, Any], names: frozenset[str], seal: Callable[[str], str]
) -> dict[str, Any]:
    """Replace each secret value by its sealed form (the JSON of the value, encrypted)."""
    return {
        key: (
            {SEALED: seal(json.dumps(value, separators=(",", ":")))}
            if key in names and value is not None
            else value
        )
        for key, value in params.items()
    }


def unseal_params(params: Mapping[str, Any] | None, unseal: Callable[[str], str]) -> dict[str, Any] | None:
    """The runner's view: every sealed value opened again."""
    if params is None:
        return None
    return {
        key: (json.loads(unseal(value[SEALED])) if is_sealed(value) else value)
        for key, value in params.items()
    }


def redact_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Everyone else's view: sealed values (and any secret-named value) become the placeholder."""
    if params is None:
        return None
    return {
        key: (PLACEHOLDER if is_sealed(value) or (is_secret_name(key) and value is not None) else value)
        for key, value in params.items()
    }


def hide_secrets(schema: Mapping[str, Any] | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """Params as a record may show them (the audit log): each secret value is the placeholder."""
    names = secret_names(schema, params)
    return {
        key: PLACEHOLDER if key in names and value is not None else value for key, value in params.items()
    }
