"""Where a webhook may POST: http(s) URLs whose host resolves to public addresses only.

A webhook is a request the control plane makes on an admin's behalf, from inside the network it runs
in: a target on loopback, a private range, link-local (cloud metadata at 169.254.169.254) or a reserved
range would turn it into a probe of that network (SSRF). So the host is resolved and EVERY address it
resolves to must be public, at creation and again at each delivery (DNS may change in between), and the
delivery then connects to the address that was checked (`Target.address`), not to whatever a second
lookup would answer (DNS rebinding). `IKOMA_WEBHOOK_ALLOW_PRIVATE=1` lifts the rule (tests, labs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from ikoma.domain.errors import Invalid

MAX_URL = 2000
RESOLVE_TIMEOUT_S = 5.0

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Invalid):
    """The URL is malformed, cannot be resolved, or resolves to a non-public address."""


@dataclass(frozen=True)
class Target:
    url: httpx.URL  # as registered
    host: str
    address: str | None  # the checked address to connect to; None: connect by name (private allowed)

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with its host replaced by the checked address (the Host header keeps the name)."""
        return self.url if self.address is None else self.url.copy_with(host=self.address)


def parse_url(url: str) -> httpx.URL:
    """The URL if it is http(s) with a host; otherwise 422 `webhook_url_invalid`."""
    if len(url) > MAX_URL:
        raise TargetRefused(
            f"the URL is longer than {MAX_URL} characters", reason="webhook_url_invalid", field="url"
        )
    try:
        parsed = httpx.URL(url)
        parsed.port  # noqa: B018  (a port out of range raises here)
    except (httpx.InvalidURL, ValueError) as exc:
        raise TargetRefused(f"not a URL: {exc}", reason="webhook_url_invalid", field="url") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TargetRefused(
            "a webhook URL is http:// or https:// with a host", reason="webhook_url_invalid", field="url"
        )
    if parsed.fragment:
        raise TargetRefused("a webhook URL has no #fragment", reason="webhook_url_invalid", field="url")
    return parsed


def is_public(address: IpAddress) -> bool:
    """Routable on the internet: not loopback, private, shared (CGNAT), link-local, multicast, reserved."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_link_local or address.is_unspecified
    )


async def resolve(url: str, *, allow_private: bool) -> Target:
    """The URL checked for delivery: every address its host resolves to is public (unless allowed).

    Raises TargetRefused: `webhook_url_invalid`, `webhook_target_unresolvable`, `webhook_target_private`.
    """
    parsed = parse_url(url)
    host = parsed.host
    if allow_private:
        return Target(parsed, host, None)
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        addresses = await _lookup(host, parsed.port or (443 if parsed.scheme == "https" else 80))
    refused = [str(a) for a in addresses if not is_public(a)]
    if refused:
        raise TargetRefused(
            f"{host} resolves to a loopback, private, link-local or reserved address ({refused[0]}); "
            "set IKOMA_WEBHOOK_ALLOW_PRIVATE=1 to allow such targets",
            reason="webhook_target_private",
            field="url",
            host=host,
            address=refused[0],
        )
    return Target(parsed, host, str(addresses[0]))


async def _lookup(host: str, port: int) -> list[IpAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise TargetRefused(
            f"{host} cannot be resolved: {type(exc).__name__}: {exc}",
            reason="webhook_target_unresolvable",
            field="url",
            host=host,
        ) from None
    found: list[IpAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # an IPv6 address may carry a zone (`fe80::1%eth0`): the zone is no part of the address checked
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise TargetRefused(
            f"{host} resolves to no address", reason="webhook_target_unresolvable", field="url", host=host
        )
    return found
