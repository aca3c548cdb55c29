"""A local fake of Scaleway's Instance API (the part IKOMA calls), backed by the Mock simulator.

Routes and JSON follow the documented shapes (and the official SDK reads every answer:
tests/integration/test_scaleway_fake_conformance.py):

    GET    /instance/v1/zones/{zone}/servers                      ?page&per_page&tags&project&name...
    POST   /instance/v1/zones/{zone}/servers                      created `stopped`, as Scaleway does
    GET    /instance/v1/zones/{zone}/servers/{id}                 404 {"type": "not_found", ...}
    DELETE /instance/v1/zones/{zone}/servers/{id}                 only a stopped server; volumes stay
    GET    /instance/v1/zones/{zone}/servers/{id}/action          {"actions": [...]}
    POST   /instance/v1/zones/{zone}/servers/{id}/action          poweron, poweroff, reboot, terminate
    PATCH  /instance/v1/zones/{zone}/servers/{id}/user_data/{key} text/plain (cloud-init)
    GET    /instance/v1/zones/{zone}/servers/{id}/user_data/{key}
    DELETE /instance/v1/zones/{zone}/volumes/{id}
    GET    /instance/v1/zones/{zone}/products/servers             {"servers": {type: {...}}}
    GET    /instance/v1/zones/{zone}/products/servers/availability

Machines, time and the named failure scenarios are the Mock simulator's (providers/mock): a test adds
rules (`await fake.cloud.add_rule(parse_rule("terminate_fails:2"))`) and moves its clock. What the
simulator answers is translated: capacity_shortage -> 400 `out_of_stock`; provider_5xx and
terminate_fails -> 503; create_timeout_but_exists -> the server is made, then the answer hangs
`hang_seconds` (the client times out); latency -> the answer comes late. The fake adds what the
simulator has no word for: `rate_limit(n)` answers the next n calls 429 (Retry-After: 0), and a wrong
X-Auth-Token is 401 `denied_authentication`.

Values the documents do not fix are the fake's own and marked so: the 5xx body's `type`, the task's
description, volume sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ikoma.providers import base
from ikoma.providers.base import ProviderError
from ikoma.providers.mock.cloud import MockCloud
from ikoma.providers.mock.machines import Clock, Machine, MachineState, MachineType, Timings
from ikoma.providers.mock.simulator import Simulator
from ikoma.providers.mock.store import MemoryStore, SimulatorStore
from ikoma.services.catalog_seed import SCALEWAY_OFFERS

PREFIX = "/instance/v1/zones/{zone}"
ORGANIZATION = "11111111-1111-4111-8111-111111111111"
NAMESPACE = uuid.UUID("5ca1e3a7-0000-4000-8000-000000000016")  # derives stable ids for IPs, volumes
GB = 1000**3  # volume sizes are bytes (decimal GB); RAM is bytes of MiB
MIB = 1024 * 1024

# the simulator's states in Scaleway's words; terminating shows as `stopping` until the server is gone
STATE_WORDS: dict[MachineState, str] = {
    MachineState.CREATING: "starting",
    MachineState.STARTING: "starting",
    MachineState.RUNNING: "running",
    MachineState.STOPPING: "stopping",
    MachineState.STOPPED: "stopped",
    MachineState.TERMINATING: "stopping",
}
STATE_DETAILS: dict[MachineState, str] = {
    MachineState.CREATING: "allocating node",
    MachineState.STARTING: "provisioning node",
    MachineState.RUNNING: "booted",
    MachineState.STOPPING: "stopping",
    MachineState.STOPPED: "",
    MachineState.TERMINATING: "terminating",
}
# what the API lets a server do in each state; a stopped server cannot `terminate` (it is deleted)
ALLOWED: dict[MachineState, tuple[str, ...]] = {
    MachineState.CREATING: ("terminate",),
    MachineState.STARTING: ("poweroff", "terminate"),
    MachineState.RUNNING: ("poweroff", "terminate", "reboot"),
    MachineState.STOPPING: (),
    MachineState.STOPPED: ("poweron",),
    MachineState.TERMINATING: (),
}


def scaleway_types() -> tuple[MachineType, ...]:
    """The catalog seed's Scaleway types as the simulator's machine types (one per code)."""
    types: dict[str, MachineType] = {}
    for offer in SCALEWAY_OFFERS:
        types.setdefault(
            offer.instance_type,
            MachineType(
                offer.instance_type,
                offer.vcpus,
                offer.ram_mb,
                offer.gpu_count,
                offer.gpu_model,
                offer.gpu_memory_mb,
                offer.hourly_price_eur,
                boot_seconds=2.0,
            ),
        )
    return tuple(types.values())


def scaleway_cloud(
    store: SimulatorStore | None = None,
    *,
    clock: Clock | None = None,
    zones: tuple[str, ...] = ("fr-par-1", "fr-par-2"),
    timings: Timings | None = None,
) -> MockCloud:
    """A Mock cloud selling Scaleway's types in Scaleway's zones; a DELETE is gone at the next call."""
    cloud = MockCloud(store or MemoryStore(), clock=clock, timings=timings or Timings(terminate_seconds=0.0))
    simulator = Simulator(cloud.simulator.clock, cloud.simulator.timings, types=scaleway_types())
    simulator.zones = zones  # type: ignore[assignment]  # the simulator's default is its two Mock zones
    cloud.simulator = simulator
    return cloud


def _iso(value: datetime) -> str:
    return value.isoformat()


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"message": message, "type": kind, **extra}, status_code=status)


def _not_found(server_id: str) -> JSONResponse:
    return _error(
        404, "not_found", "resource is not found", resource="instance_server", resource_id=server_id
    )


def _invalid(message: str) -> JSONResponse:
    return _error(400, "invalid_request_error", message)


def _page(request: Request) -> tuple[int, int] | JSONResponse:
    try:
        page = int(request.query_params.get("page", "1"))
        per_page = int(request.query_params.get("per_page", "50"))
    except ValueError:
        return _invalid("page and per_page must be integers")
    if page < 1 or not 1 <= per_page <= 100:
        return _invalid("page must be 1 or more and per_page 1 to 100")
    return page, per_page


Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class ScalewayFake:
    cloud: MockCloud
    secret_key: str
    project_id: str
    hang_seconds: float = 5.0  # how long a create_timeout_but_exists answer hangs
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) as received
    bodies: list[dict[str, Any]] = field(default_factory=list)  # JSON bodies of POST /servers
    user_data: dict[str, dict[str, str]] = field(default_factory=dict)  # server id -> key -> content
    kept_volumes: set[str] = field(default_factory=set)  # volumes of deleted servers, not yet deleted
    _rate_limited: int = 0
    _failing: list[list[Any]] = field(default_factory=list)  # [method, path suffix, times left]

    def rate_limit(self, calls: int) -> None:
        """The next `calls` requests answer 429 (before doing anything)."""
        self._rate_limited = calls

    def fail_next(self, method: str, suffix: str, *, times: int = 1) -> None:
        """The next `times` requests of that method whose path ends with `suffix` answer 503."""
        self._failing.append([method, suffix, times])

    def calls(self, method: str, suffix: str = "") -> int:
        """How many requests of that method had a path ending with `suffix`."""
        return sum(1 for m, p in self.requests if m == method and p.endswith(suffix))

    @property
    def app(self) -> Starlette:
        z = PREFIX
        s = f"{z}/servers/{{server_id}}"
        return Starlette(
            routes=[
                Route(f"{z}/servers", self._gate(self.list_servers), methods=["GET"]),
                Route(f"{z}/servers", self._gate(self.create_server), methods=["POST"]),
                Route(s, self._gate(self.get_server), methods=["GET"]),
                Route(s, self._gate(self.delete_server), methods=["DELETE"]),
                Route(f"{s}/action", self._gate(self.list_actions), methods=["GET"]),
                Route(f"{s}/action", self._gate(self.server_action), methods=["POST"]),
                Route(f"{s}/user_data/{{key}}", self._gate(self.set_user_data), methods=["PATCH"]),
                Route(f"{s}/user_data/{{key}}", self._gate(self.get_user_data), methods=["GET"]),
                Route(f"{z}/volumes/{{volume_id}}", self._gate(self.delete_volume), methods=["DELETE"]),
                Route(f"{z}/products/servers", self._gate(self.server_types), methods=["GET"]),
                Route(f"{z}/products/servers/availability", self._gate(self.availability), methods=["GET"]),
            ]
        )

    def _gate(self, handler: Handler) -> Handler:
        """Record the call; refuse a wrong key (401) and a rate-limited call (429); the simulator's
        errors as the API's."""

        async def gated(request: Request) -> Response:
            self.requests.append((request.method, request.url.path))
            if request.headers.get("x-auth-token") != self.secret_key:
                return _error(
                    401,
                    "denied_authentication",
                    "authentication is denied",
                    method="api_key",
                    reason="not_found",
                )
            if self._rate_limited > 0:
                self._rate_limited -= 1
                response = _error(429, "too_many_requests", "too many requests", help_message="slow down")
                response.headers["Retry-After"] = "0"
                return response
            for failing in self._failing:
                if failing[2] > 0 and request.method == failing[0] and request.url.path.endswith(failing[1]):
                    failing[2] -= 1
                    return _error(503, "service_unavailable", "service unavailable, try again")
            if request.path_params["zone"] not in self.cloud.simulator.zones:
                return _invalid(f"unknown zone {request.path_params['zone']!r}")
            try:
                return await handler(request)
            except ProviderError as exc:
                return self._provider_error(exc, request)

        return gated

    def _provider_error(self, exc: ProviderError, request: Request) -> Response:
        if exc.reason == base.CAPACITY_SHORTAGE:
            return _error(400, "out_of_stock", "out of stock", resource="instance_server")
        if exc.reason == base.NOT_FOUND:
            return _not_found(request.path_params.get("server_id", ""))
        if exc.reason == base.ACTION_NOT_ALLOWED:
            return _invalid(str(exc))
        if exc.reason == base.INVALID_REQUEST:
            return _invalid(str(exc))
        # provider_5xx, terminate_fails: the fake's own 5xx body (the documents fix no type for it)
        return _error(503, "service_unavailable", "service unavailable, try again")

    # --- servers ---------------------------------------------------------------------------------------

    def server_json(self, machine: Machine) -> dict[str, Any]:
        """A simulated machine as the API's `server` object."""
        ip_id = str(uuid.uuid5(NAMESPACE, f"ip/{machine.public_ip}/{machine.id}"))
        public_ip = (
            {
                "id": ip_id,
                "address": machine.public_ip,
                "gateway": "62.210.0.1",
                "netmask": "32",
                "family": "inet",
                "dynamic": True,
                "provisioning_mode": "dhcp",
                "tags": [],
                "state": "attached",
            }
            if machine.public_ip
            else None
        )
        volume = self.volume_id(machine)
        created, updated = _iso(machine.created_at), _iso(machine.updated_at)
        return {
            "id": machine.id,
            "name": machine.name,
            "organization": ORGANIZATION,
            "project": self.project_id,
            "allowed_actions": list(ALLOWED[machine.state]),
            "tags": [f"{k}={v}" if v else k for k, v in machine.tags.items()],
            "commercial_type": machine.instance_type,
            "creation_date": created,
            "modification_date": updated,
            "dynamic_ip_required": True,
            "routed_ip_enabled": True,
            "enable_ipv6": False,
            "hostname": machine.name,
            "image": {
                "id": str(uuid.uuid5(NAMESPACE, f"image/{machine.image}")),
                "name": machine.image,
                "arch": "x86_64",
                "creation_date": created,
                "modification_date": created,
                "extra_volumes": {},
                "from_server": "",
                "organization": ORGANIZATION,
                "public": True,
                "state": "available",
                "project": self.project_id,
                "tags": [],
                "zone": machine.zone,
            },
            "protected": False,
            "private_ip": machine.private_ip,
            "public_ip": public_ip,
            "public_ips": [public_ip] if public_ip else [],
            "mac_address": "de:00:00:" + ":".join(machine.id.replace("-", "")[i : i + 2] for i in (0, 2, 4)),
            "state": STATE_WORDS[machine.state],
            "state_detail": STATE_DETAILS[machine.state],
            "boot_type": "local",
            "arch": "x86_64",
            "volumes": {
                "0": {
                    "id": volume,
                    "name": f"{machine.name}-root",
                    "export_uri": None,
                    "organization": ORGANIZATION,
                    "project": self.project_id,
                    "server": {"id": machine.id, "name": machine.name},
                    "size": 20 * GB,  # the fake's own size
                    "volume_type": "l_ssd",
                    "boot": False,
                    "zone": machine.zone,
                    "creation_date": created,
                    "modification_date": updated,
                    "state": "available",
                }
            },
            "security_group": {
                "id": str(uuid.uuid5(NAMESPACE, "security-group")),
                "name": "Default security group",
            },
            "maintenances": [],
            "private_nics": [],
            "filesystems": [],
            "placement_group": None,
            "location": None,
            "ipv6": None,
            "end_of_service": False,
            "zone": machine.zone,
        }

    @staticmethod
    def volume_id(machine: Machine) -> str:
        return str(uuid.uuid5(NAMESPACE, f"volume/{machine.id}/0"))

    async def list_servers(self, request: Request) -> Response:
        paging = _page(request)
        if isinstance(paging, JSONResponse):
            return paging
        page, per_page = paging
        query = request.query_params
        wanted_tags = [t for t in query.get("tags", "").split(",") if t]
        machines = await self.cloud.list_machines(zone=request.path_params["zone"])
        servers = [self.server_json(m) for m in reversed(machines)]  # newest first, as the API lists
        servers = [
            s
            for s in servers
            if all(t in s["tags"] for t in wanted_tags)
            and (not query.get("project") or s["project"] == query["project"])
            and (not query.get("name") or query["name"] in s["name"])
            and (not query.get("commercial_type") or s["commercial_type"] == query["commercial_type"])
            and (not query.get("state") or s["state"] == query["state"])
        ]
        chunk = servers[(page - 1) * per_page : page * per_page]
        return JSONResponse(
            {"servers": chunk, "total_count": len(servers)}, headers={"X-Total-Count": str(len(servers))}
        )

    async def create_server(self, request: Request) -> Response:
        body = await request.json()
        self.bodies.append(body)
        if not isinstance(body, dict) or not body.get("commercial_type"):
            return _error(
                400, "invalid_request_error", "Validation Error", fields={"commercial_type": ["required key"]}
            )
        if body.get("project") not in (None, self.project_id):
            return _error(403, "permissions_denied", "insufficient permissions", details=[])
        tags: dict[str, str] = {}
        for tag in body.get("tags") or []:
            key, _, value = str(tag).partition("=")
            tags[key] = value
        try:
            machine = await self.cloud.create(
                zone=request.path_params["zone"],
                instance_type=str(body["commercial_type"]),
                name=str(body.get("name") or "srv"),
                image=str(body.get("image") or ""),
                tags=tags,
                power_on=False,  # Scaleway creates servers stopped
            )
        except ProviderError as exc:
            if exc.reason == base.PROVIDER_TIMEOUT:  # made, but the answer never comes in time
                await asyncio.sleep(self.hang_seconds)
                return _error(504, "service_unavailable", "gateway timeout")
            raise
        return JSONResponse({"server": self.server_json(machine)}, status_code=201)

    async def get_server(self, request: Request) -> Response:
        machine = await self.cloud.get(request.path_params["zone"], request.path_params["server_id"])
        if machine is None:
            return _not_found(request.path_params["server_id"])
        return JSONResponse({"server": self.server_json(machine)})

    async def delete_server(self, request: Request) -> Response:
        zone, server_id = request.path_params["zone"], request.path_params["server_id"]
        machine = await self.cloud.get(zone, server_id)
        if machine is None:
            return _not_found(server_id)
        if machine.state is not MachineState.STOPPED:
            return _invalid("instance should be powered off")
        await self.cloud.act(zone, server_id, "terminate")  # the simulator's way to remove it
        self.kept_volumes.add(self.volume_id(machine))  # DELETE leaves the volumes behind
        return Response(status_code=204)

    async def list_actions(self, request: Request) -> Response:
        machine = await self.cloud.get(request.path_params["zone"], request.path_params["server_id"])
        if machine is None:
            return _not_found(request.path_params["server_id"])
        return JSONResponse({"actions": list(ALLOWED[machine.state])})

    async def server_action(self, request: Request) -> Response:
        zone, server_id = request.path_params["zone"], request.path_params["server_id"]
        body = await request.json()
        action = str(body.get("action", "poweron")) if isinstance(body, dict) else ""
        machine = await self.cloud.get(zone, server_id)
        if machine is None:
            return _not_found(server_id)
        if action not in ALLOWED[machine.state]:
            return _invalid(
                f"action {action} is not allowed while the server is {STATE_WORDS[machine.state]}"
            )
        await self.cloud.act(zone, server_id, action)
        now = _iso(self.cloud.simulator.clock.now())
        task = {
            "id": str(uuid.uuid4()),
            "description": f"server_{action}",  # the fake's own wording
            "progress": 0,
            "status": "pending",
            "href_from": f"/servers/{server_id}/action",
            "href_result": f"/servers/{server_id}",
            "zone": zone,
            "started_at": now,
            "terminated_at": None,
        }
        return JSONResponse({"task": task}, status_code=202)

    async def set_user_data(self, request: Request) -> Response:
        zone, server_id = request.path_params["zone"], request.path_params["server_id"]
        if request.headers.get("content-type", "").split(";")[0] != "text/plain":
            return _invalid("user data must be sent as text/plain")
        if await self.cloud.get(zone, server_id) is None:
            return _not_found(server_id)
        self.user_data.setdefault(server_id, {})[request.path_params["key"]] = (await request.body()).decode()
        return Response(status_code=204)

    async def get_user_data(self, request: Request) -> Response:
        content = self.user_data.get(request.path_params["server_id"], {}).get(request.path_params["key"])
        if content is None:
            return _not_found(request.path_params["server_id"])
        return PlainTextResponse(content)

    async def delete_volume(self, request: Request) -> Response:
        volume_id = request.path_params["volume_id"]
        if volume_id in self.kept_volumes:
            self.kept_volumes.discard(volume_id)
            return Response(status_code=204)
        for machine in await self.cloud.list_machines(zone=request.path_params["zone"]):
            if self.volume_id(machine) == volume_id:
                return _error(
                    400,
                    "precondition_failed",
                    "volume is attached to a server",
                    precondition="resource_still_in_use",
                )
        return _error(
            404, "not_found", "resource is not found", resource="instance_volume", resource_id=volume_id
        )

    # --- products --------------------------------------------------------------------------------------

    async def server_types(self, request: Request) -> Response:
        paging = _page(request)
        if isinstance(paging, JSONResponse):
            return paging
        page, per_page = paging
        offered = [o for o in await self.cloud.offers() if o.zone == request.path_params["zone"]]
        described = {o.machine_type.code: _server_type(o.machine_type) for o in offered}
        codes = sorted(described)[(page - 1) * per_page : page * per_page]
        return JSONResponse(
            {"servers": {c: described[c] for c in codes}, "total_count": len(described)},
            headers={"X-Total-Count": str(len(described))},
        )

    async def availability(self, request: Request) -> Response:
        paging = _page(request)
        if isinstance(paging, JSONResponse):
            return paging
        page, per_page = paging
        offered = {
            o.machine_type.code: "available" if o.available else "shortage"
            for o in await self.cloud.offers()
            if o.zone == request.path_params["zone"]
        }
        codes = sorted(offered)[(page - 1) * per_page : page * per_page]
        return JSONResponse(
            {"servers": {c: {"availability": offered[c]} for c in codes}, "total_count": len(offered)},
            headers={"X-Total-Count": str(len(offered))},
        )


def _server_type(t: MachineType) -> dict[str, Any]:
    described: dict[str, Any] = {
        "hourly_price": float(t.hourly_price_eur),  # JSON numbers, as the API sends them
        "monthly_price": float(t.hourly_price_eur * 730),
        "alt_names": [],
        "ncpus": t.vcpus,
        "ram": t.ram_mb * MIB,
        "gpu": t.gpu_count,
        "arch": "x86_64",
        "end_of_service": False,
        "per_volume_constraint": {"l_ssd": {"min_size": 0, "max_size": 800 * GB}},
        "volumes_constraint": {"min_size": 0, "max_size": 800 * GB},
        "scratch_storage_max_volumes_count": 0,
        "network": {"interfaces": [], "ipv6_support": True},
        "capabilities": {"boot_types": ["local", "rescue"], "block_storage": True},
    }
    if t.gpu_count:
        described["gpu_info"] = {
            "gpu_manufacturer": "NVIDIA",
            "gpu_name": t.gpu_model or "",
            "gpu_memory": (t.gpu_memory_mb or 0) * MIB,
        }
    return described


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free port of 127.0.0.1 in this event loop; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws="none", http="h11", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            if task.done() and task.exception() is not None:
                raise RuntimeError(f"the Scaleway fake did not start: {task.exception()!r}")
            raise RuntimeError("the Scaleway fake did not start within 5 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, timeout=10)
        sock.close()
