"""One webhook delivery attempt over HTTP: the signed POST, with its outcome as a value.

The target is checked (and pinned) by `webhook_targets.resolve` before each attempt; the body is the
event's JSON and the signature covers `"<timestamp>.<body>"` with the webhook's secret, so a receiver
can check both who sent it and when (docs/api.md, "Webhooks").
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import time
from dataclasses import dataclass

import httpx

from ikoma import __version__
from ikoma.services.webhook_targets import TargetRefused, resolve

ERROR_CHARS = 500


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: what a receiver recomputes."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass(frozen=True)
class Job:
    delivery_id: str
    webhook_id: str
    url: str
    secret: str
    kind: str
    body: bytes


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    duration_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def post(job: Job, *, timeout_s: float, allow_private: bool, tls: ssl.SSLContext) -> Attempt:
    """One POST, outside any transaction; every failure is an Attempt with its error, never raised."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = await resolve(job.url, allow_private=allow_private)
    except TargetRefused as refused:
        return Attempt(None, took(), f"{refused.reason}: {refused.message}"[:ERROR_CHARS])
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"IKOMA-Webhooks/{__version__}",
        "Host": target.url.netloc.decode("ascii").rpartition("@")[2],
        "X-Ikoma-Event": job.kind,
        "X-Ikoma-Delivery": job.delivery_id,
        "X-Ikoma-Timestamp": timestamp,
        "X-Ikoma-Signature": sign(job.secret, timestamp, job.body),
    }
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    try:
        # a client per attempt: a pooled connection must never carry one host's TLS name to another
        async with (
            httpx.AsyncClient(
                timeout=timeout_s, follow_redirects=False, trust_env=False, verify=tls
            ) as client,
            client.stream(
                "POST", target.pinned_url, content=job.body, headers=headers, extensions=extensions
            ) as answer,
        ):
            status = answer.status_code  # the body is not read: only the status counts
    except httpx.TimeoutException as exc:
        return Attempt(None, took(), f"timeout: {type(exc).__name__}")
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        return Attempt(None, took(), f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
    error = None if 200 <= status < 300 else f"HTTP {status}"
    return Attempt(status, took(), error)
