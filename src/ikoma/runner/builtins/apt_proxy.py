"""apt's proxy for one run (aptProxyMode `proxy`, seed 003): the `-o` options apt-get gets, on a runner
and over SSH alike. Nothing is written on the machine: the next apt run without them goes direct."""

from __future__ import annotations

from urllib.parse import urlsplit


class ProxyRefused(ValueError):
    """The proxy URL handed to this run is not one apt may be given."""


def check(url: str) -> str:
    """`url` when it is an http(s) URL with a host, no credentials and nothing apt could read as more
    configuration; the API checks the same (api/schemas.py), but a runner does not trust its input."""
    parsed = urlsplit(url)
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or any(c.isspace() or c in "\"';{}" for c in url)
        or parsed.username
        or parsed.password
    ):
        raise ProxyRefused(
            "the apt proxy URL must be an http:// or https:// URL with a host and no credentials"
        )
    return url


def options(url: str | None) -> list[str]:
    """apt-get's options for this run: none without a proxy, else both the http and https proxies."""
    if not url:
        return []
    url = check(url)
    return ["-o", f"Acquire::http::Proxy={url}", "-o", f"Acquire::https::Proxy={url}"]
