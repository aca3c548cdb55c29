"""The Scaleway provider: the `Provider` interface over the Instance API (client.py).

    provider = provider_from_settings(settings)   # None unless a secret key is configured
    created = await provider.create(InstanceRequest(zone="fr-par-2", instance_type="L4-1-24G", ...))

How each call is made:
- `create`: POST /servers (Scaleway creates it stopped), its cloud-init user data, then `poweron`. Tags
  are `key=value` strings (OWNER_TAG, INSTANCE_TAG, labels). If a step after the POST fails, the stopped
  server is deleted before the error is raised; a timeout of the POST itself raises PROVIDER_TIMEOUT and
  the caller finds the server by its tags (`list_owned`) instead of creating a second one.
- Power actions are called only when the server's `allowed_actions` lists them (else ACTION_NOT_ALLOWED).
- `terminate`: the `terminate` action when allowed (it deletes the server's local volumes and its
  dynamic IP); a stopped server, which Scaleway does not let `terminate`, is deleted (DELETE /servers)
  and then its local volumes; 404 anywhere is success (gone already).
- `list_owned`: GET /servers filtered by the owner tag, in every configured zone, every page.
- `offers`: GET /products/servers and /products/servers/availability per zone; prices read as exact
  decimals (EUR per hour).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog

from ikoma.providers import base
from ikoma.providers.base import InstanceRequest, Offer, PowerState, ProviderError, ProviderInstance
from ikoma.providers.scaleway.client import InstanceClient
from ikoma.settings import Settings, SettingsError

log = structlog.get_logger("ikoma.providers.scaleway")

NAME = "scaleway"
MIB = 1024 * 1024

# the API's state words (`stopped in place` is how the API spells it; SDKs write `stopped_in_place`)
STATES: dict[str, PowerState] = {
    "starting": PowerState.STARTING,
    "running": PowerState.RUNNING,
    "stopping": PowerState.STOPPING,
    "stopped": PowerState.STOPPED,
    "stopped in place": PowerState.STOPPED,
    "stopped_in_place": PowerState.STOPPED,
    "locked": PowerState.ERROR,
}
STOPPED_STATES = frozenset({"stopped", "stopped in place", "stopped_in_place"})
LOCAL_VOLUME_TYPES = frozenset({"l_ssd", "scratch"})  # deleted with the server by `terminate`


class ScalewayProvider:
    name = NAME

    def __init__(
        self, client: InstanceClient, *, project_id: str, zones: tuple[str, ...], image: str
    ) -> None:
        self.client = client
        self.project_id = project_id
        self.zones = zones
        self.image = image

    async def offers(self) -> list[Offer]:
        offers: list[Offer] = []
        for zone in self.zones:
            types = await self.client.list_server_types(zone)
            availability = await self.client.server_types_availability(zone)
            for code, described in sorted(types.items()):
                offer = _offer(zone, code, described, availability.get(code))
                if offer is not None:
                    offers.append(offer)
        return offers

    async def create(self, request: InstanceRequest) -> ProviderInstance:
        body = {
            "name": request.name,
            "commercial_type": request.instance_type,
            "image": request.image or self.image,
            "project": self.project_id,
            "tags": [f"{key}={value}" for key, value in request.tags.items()],
            "dynamic_ip_required": True,
        }
        server = await self.client.create_server(request.zone, body)
        server_id = str(server["id"])
        try:
            if request.user_data is not None:
                await self.client.set_user_data(request.zone, server_id, request.user_data)
            await self._act(request.zone, server, "poweron")
            started = await self.client.get_server(request.zone, server_id)
        except ProviderError:
            await self._discard(request.zone, server_id)
            raise
        if started is None:  # deleted between two calls: the caller sees it gone through get
            raise ProviderError(
                f"Scaleway server {server_id} vanished right after it was created",
                reason=base.NOT_FOUND,
                retryable=True,
                status=404,
            )
        return _instance(request.zone, started)

    async def get(self, zone: str, provider_id: str) -> ProviderInstance | None:
        server = await self.client.get_server(zone, provider_id)
        return _instance(zone, server) if server is not None else None

    async def list_owned(self, owner: str) -> list[ProviderInstance]:
        wanted = f"{base.OWNER_TAG}={owner}"
        owned: list[ProviderInstance] = []
        for zone in self.zones:
            for server in await self.client.list_servers(zone, project=self.project_id, tags=[wanted]):
                # the API's tag filter is the first sieve; an exact match is ours to check
                if wanted in (server.get("tags") or []):
                    owned.append(_instance(zone, server))
        return owned

    async def start(self, zone: str, provider_id: str) -> None:
        server = await self._server(zone, provider_id)
        if server.get("state") not in ("starting", "running"):
            await self._act(zone, server, "poweron")

    async def stop(self, zone: str, provider_id: str) -> None:
        server = await self._server(zone, provider_id)
        if server.get("state") not in ("stopping", *STOPPED_STATES):
            await self._act(zone, server, "poweroff")

    async def terminate(self, zone: str, provider_id: str) -> None:
        try:
            server = await self.client.get_server(zone, provider_id)
            if server is None:
                return
            if "terminate" in _allowed(server):
                await self.client.server_action(zone, provider_id, "terminate")
            elif server.get("state") in STOPPED_STATES:
                await self.client.delete_server(zone, provider_id)
                await self._delete_local_volumes(zone, server)
            else:
                # starting/stopping (perhaps our own terminate under way) or locked: not now
                state = server.get("state")
                raise ProviderError(
                    f"Scaleway server {provider_id} is {state}: terminate is not allowed now",
                    reason=base.ACTION_NOT_ALLOWED,
                    retryable=state != "locked",
                    status=409,
                )
        except ProviderError as exc:
            if exc.reason != base.NOT_FOUND:
                raise

    async def close(self) -> None:
        await self.client.close()

    # --- helpers ---------------------------------------------------------------------------------------

    async def _server(self, zone: str, provider_id: str) -> dict[str, Any]:
        server = await self.client.get_server(zone, provider_id)
        if server is None:
            raise ProviderError(
                f"no Scaleway server {provider_id} in zone {zone}",
                reason=base.NOT_FOUND,
                retryable=False,
                status=404,
            )
        return server

    async def _act(self, zone: str, server: Mapping[str, Any], action: str) -> None:
        """The action, only when the server's `allowed_actions` lists it."""
        if action not in _allowed(server):
            raise ProviderError(
                f"Scaleway does not allow {action} on server {server.get('id')} while it is "
                f"{server.get('state')} (allowed: {', '.join(sorted(_allowed(server))) or 'none'})",
                reason=base.ACTION_NOT_ALLOWED,
                retryable=False,
                status=409,
            )
        await self.client.server_action(zone, str(server["id"]), action)

    async def _discard(self, zone: str, server_id: str) -> None:
        """Delete a server a failed create left stopped; if that fails too, the orphan watchdog sees
        it by its tags."""
        try:
            server = await self.client.get_server(zone, server_id)
            if server is not None and server.get("state") in STOPPED_STATES:
                await self.client.delete_server(zone, server_id)
                await self._delete_local_volumes(zone, server)
        except ProviderError as exc:
            log.warning("scaleway_discard_failed", zone=zone, server_id=server_id, reason=exc.reason)

    async def _delete_local_volumes(self, zone: str, server: Mapping[str, Any]) -> None:
        for volume in (server.get("volumes") or {}).values():
            if volume.get("volume_type") in LOCAL_VOLUME_TYPES and volume.get("id"):
                try:
                    await self.client.delete_volume(zone, str(volume["id"]))
                except ProviderError as exc:
                    if exc.reason != base.NOT_FOUND:
                        raise


def _allowed(server: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(str(a) for a in server.get("allowed_actions") or ())


def _tags(raw: list[str] | None) -> dict[str, str]:
    """`key=value` strings as a mapping; a tag without `=` keeps an empty value."""
    tags: dict[str, str] = {}
    for tag in raw or ():
        key, _, value = str(tag).partition("=")
        tags[key] = value
    return tags


def _instance(zone: str, server: Mapping[str, Any]) -> ProviderInstance:
    raw_state = str(server.get("state") or "")
    public = server.get("public_ip") or next(iter(server.get("public_ips") or ()), None)
    created = server.get("creation_date")
    return ProviderInstance(
        provider_id=str(server["id"]),
        zone=str(server.get("zone") or zone),
        instance_type=str(server.get("commercial_type") or ""),
        name=str(server.get("name") or ""),
        state=STATES.get(raw_state, PowerState.ERROR),
        public_ip=str(public["address"]) if public and public.get("address") else None,
        private_ip=server.get("private_ip"),
        tags=_tags(server.get("tags")),
        created_at=datetime.fromisoformat(created) if isinstance(created, str) else None,
        raw_state=raw_state,
        allowed_actions=_allowed(server),
    )


def _offer(zone: str, code: str, described: Mapping[str, Any], availability: str | None) -> Offer | None:
    """A product as an Offer; None (skipped, logged) when it lacks a price or a size."""
    try:
        price = Decimal(str(described["hourly_price"]))
        vcpus = int(described["ncpus"])
        ram_mb = int(described["ram"]) // MIB
    except (KeyError, TypeError, ValueError, ArithmeticError):
        log.warning("scaleway_offer_skipped", zone=zone, instance_type=code)
        return None
    gpu_info = described.get("gpu_info") or {}
    gpu_count = int(described.get("gpu") or 0)
    gpu_memory = gpu_info.get("gpu_memory")
    return Offer(
        zone=zone,
        region=zone.rsplit("-", 1)[0],
        instance_type=code,
        vcpus=vcpus,
        ram_mb=ram_mb,
        gpu_count=gpu_count,
        gpu_model=(gpu_info.get("gpu_name") or None) if gpu_count else None,
        gpu_memory_mb=int(gpu_memory) // MIB if gpu_count and gpu_memory else None,
        hourly_price_eur=price,
        # `shortage`: none to be had now; `scarce` still sells; end of service: no new servers
        available=availability != "shortage" and not described.get("end_of_service", False),
    )


# --- configuration -----------------------------------------------------------------------------------


def secret_key(settings: Settings) -> str | None:
    """The secret key: SCALEWAY_SECRET_KEY_FILE's content first, else the variable (or an alias)."""
    if settings.scaleway_secret_key_file is not None:
        path = settings.scaleway_secret_key_file
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"SCALEWAY_SECRET_KEY_FILE={path}: cannot read it ({exc.strerror})") from None
        if not key:
            raise SettingsError(f"SCALEWAY_SECRET_KEY_FILE={path}: the file is empty")
        return key
    if settings.scaleway_secret_key is not None:
        key = settings.scaleway_secret_key.get_secret_value().strip()
        return key or None
    return None


def zones(settings: Settings) -> tuple[str, ...]:
    found = tuple(z.strip() for z in settings.scaleway_zones.split(",") if z.strip())
    if not found:
        raise SettingsError("SCALEWAY_ZONES: name at least one zone (e.g. fr-par-2)")
    return found


def provider_from_settings(settings: Settings) -> ScalewayProvider | None:
    """The Scaleway provider when a secret key is configured, else None (providers/registry.py)."""
    key = secret_key(settings)
    if key is None:
        return None
    if not settings.scaleway_project_id:
        raise SettingsError(
            "SCALEWAY_PROJECT_ID: needed with a Scaleway secret key (servers belong to a project)"
        )
    client = InstanceClient(key, api_url=settings.scaleway_api_url, timeout=settings.scaleway_timeout)
    return ScalewayProvider(
        client, project_id=settings.scaleway_project_id, zones=zones(settings), image=settings.scaleway_image
    )
