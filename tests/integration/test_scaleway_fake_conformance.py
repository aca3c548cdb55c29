"""The official Scaleway SDK (`scaleway`, InstanceV1API) pointed at the local fake of the Instance API
reads every answer the fake gives, and the fake sends no field the SDK's types do not know: the fake's
JSON shapes are Scaleway's, so the adapter tested against it speaks the real API.

`InstanceUtilsV1API` is the SDK's InstanceV1API plus its user data calls. The SDK is synchronous
(requests): its calls run in a thread while this event loop serves the fake.
"""

from __future__ import annotations

import asyncio
import dataclasses
import typing
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, TypeVar

import httpx
import pytest
from scaleway import Client
from scaleway.instance.v1 import (
    GetServerTypesAvailabilityResponse,
    ListServersResponse,
    ListServersTypesResponse,
    Server,
    ServerAction,
    ServerActionResponse,
)
from scaleway.instance.v1.custom_api import InstanceUtilsV1API
from scaleway_core.api import ScalewayException

from ikoma.providers import base
from ikoma.providers.mock.machines import ManualClock
from ikoma.providers.mock.scenarios import parse_rule
from tests.fakes.scaleway_api import ScalewayFake, scaleway_cloud, serving

ZONE = "fr-par-2"
TYPE = "L4-1-24G"
SECRET = "3f6f2a4e-9c1d-4b7a-8e2f-5a6b7c8d9e0f"  # the SDK checks the format: a UUID
ACCESS = "SCWABCDEFGHIJKLMNOPQ"
PROJECT = "22222222-2222-4222-8222-222222222222"
OWNER_TAG = f"{base.OWNER_TAG}=install-a"
T = TypeVar("T")


@dataclasses.dataclass
class Sdk:
    api: InstanceUtilsV1API  # InstanceV1API with the user data calls
    fake: ScalewayFake
    clock: ManualClock
    url: str

    async def __call__(self, call: Callable[..., T], /, **kwargs: Any) -> T:
        return await asyncio.to_thread(call, **kwargs)

    async def raw(self, path: str, **params: str) -> dict[str, Any]:
        """The fake's JSON as sent (for the field check)."""
        async with httpx.AsyncClient(base_url=self.url, headers={"X-Auth-Token": SECRET}) as client:
            response = await client.get(f"/instance/v1/zones/{ZONE}{path}", params=params)
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def sdk() -> AsyncIterator[Sdk]:
    clock = ManualClock()
    fake = ScalewayFake(scaleway_cloud(clock=clock), secret_key=SECRET, project_id=PROJECT)
    async with serving(fake.app) as url:
        client = Client(
            access_key=ACCESS,
            secret_key=SECRET,
            api_url=url,
            default_zone=ZONE,
            default_region="fr-par",
            default_project_id=PROJECT,
        )
        yield Sdk(InstanceUtilsV1API(client), fake, clock, url)


def _dataclass_in(hint: Any) -> tuple[type | None, bool]:
    """The SDK dataclass a field's type holds (through Optional, list, dict), and whether it is the
    value type of a dict (a map of them, like `volumes`)."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint, False
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is dict and len(args) == 2:
        inner, _ = _dataclass_in(args[1])
        return inner, True
    for arg in args:
        inner, is_map = _dataclass_in(arg)
        if inner is not None:
            return inner, is_map
    return None, False


def unknown_fields(data: Any, cls: type, where: str) -> list[str]:
    """Keys of `data` (recursively) that the SDK type `cls` has no field for."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown: list[str] = []
    for key, value in data.items():
        name = f"{key}_" if f"{key}_" in names else key  # the SDK spells `type` as `type_`
        if name not in names:
            unknown.append(f"{where}.{key}")
            continue
        inner, is_map = _dataclass_in(hints[name])
        if inner is None or value is None:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                unknown += unknown_fields(item, inner, f"{where}.{key}[{i}]")
        elif is_map:
            for k, item in value.items():
                unknown += unknown_fields(item, inner, f"{where}.{key}.{k}")
        else:
            unknown += unknown_fields(value, inner, f"{where}.{key}")
    return unknown


async def test_the_sdk_reads_a_servers_whole_life_from_the_fake(sdk: Sdk) -> None:
    created = (
        await sdk(
            sdk.api._create_server,
            commercial_type=TYPE,
            name="conformance",
            image="ubuntu_jammy",
            project=PROJECT,
            tags=[OWNER_TAG, f"{base.INSTANCE_TAG}=i-1"],
            protected=False,
            dynamic_ip_required=True,
        )
    ).server
    assert created is not None
    assert isinstance(created, Server)
    assert created.state == "stopped"
    assert created.allowed_actions == [ServerAction.POWERON]
    assert created.commercial_type == TYPE
    assert isinstance(created.creation_date, datetime)
    assert created.public_ip is not None
    assert created.public_ip.address == created.public_ips[0].address
    assert created.volumes["0"].volume_type == "l_ssd"
    assert created.tags == [OWNER_TAG, f"{base.INSTANCE_TAG}=i-1"]
    assert created.zone == ZONE
    assert created.project == PROJECT

    await sdk(
        sdk.api.set_server_user_data, server_id=created.id, key="cloud-init", content=b"#cloud-config\n"
    )
    user_data = await sdk(sdk.api.get_server_user_data, server_id=created.id, key="cloud-init")
    assert user_data.content == b"#cloud-config\n"

    actions = await sdk(sdk.api.list_server_actions, server_id=created.id)
    assert actions.actions == [ServerAction.POWERON]
    task = (await sdk(sdk.api.server_action, server_id=created.id, action=ServerAction.POWERON)).task
    assert task is not None
    assert task.href_result == f"/servers/{created.id}"
    assert isinstance(task.started_at, datetime)

    starting = (await sdk(sdk.api.get_server, server_id=created.id)).server
    assert starting is not None
    assert starting.state == "starting"
    sdk.clock.advance(60)
    running = (await sdk(sdk.api.get_server, server_id=created.id)).server
    assert running is not None
    assert running.state == "running"
    assert ServerAction.TERMINATE in running.allowed_actions

    listed = await sdk(sdk.api.list_servers, tags=[OWNER_TAG], project=PROJECT)
    assert isinstance(listed, ListServersResponse)
    assert int(listed.total_count) == 1  # the SDK takes it from the X-Total-Count header, as text
    assert [s.id for s in listed.servers] == [created.id]

    await sdk(sdk.api.server_action, server_id=created.id, action=ServerAction.POWEROFF)
    sdk.clock.advance(60)
    stopped = (await sdk(sdk.api.get_server, server_id=created.id)).server
    assert stopped is not None
    assert stopped.state == "stopped"
    await sdk(sdk.api.delete_server, server_id=created.id)
    with pytest.raises(ScalewayException) as gone:
        await sdk(sdk.api.get_server, server_id=created.id)
    assert gone.value.status_code == 404
    assert gone.value.response.json()["type"] == "not_found"
    await sdk(sdk.api.delete_volume, volume_id=created.volumes["0"].id)


async def test_the_sdk_pages_through_every_server(sdk: Sdk) -> None:
    for i in range(5):
        await sdk.fake.cloud.create(
            zone=ZONE, instance_type="DEV1-S", name=f"s{i}", image="ubuntu_jammy", tags={"ikoma": "install-a"}
        )
    every = await sdk(sdk.api.list_servers_all, per_page=2)
    assert sorted(s.name for s in every) == [f"s{i}" for i in range(5)]
    # pages of 2; the SDK asks for pages until one comes back empty
    assert sdk.fake.calls("GET", f"/zones/{ZONE}/servers") == 4


async def test_the_sdk_reads_instance_types_and_their_availability(sdk: Sdk) -> None:
    await sdk.fake.cloud.add_rule(parse_rule("capacity_shortage", zone=ZONE, instance_type=TYPE))
    types = await sdk(sdk.api.list_servers_types)
    assert isinstance(types, ListServersTypesResponse)
    l4 = types.servers[TYPE]
    assert l4.hourly_price == pytest.approx(0.75)
    assert l4.ncpus == 8
    assert l4.ram == 48 * 1024**3
    assert l4.gpu == 1
    assert l4.gpu_info is not None
    assert l4.gpu_info.gpu_name == "L4"
    assert l4.gpu_info.gpu_memory == 24 * 1024**3
    availability = await sdk(sdk.api.get_server_types_availability)
    assert isinstance(availability, GetServerTypesAvailabilityResponse)
    assert availability.servers[TYPE].availability == "shortage"
    assert availability.servers["DEV1-S"].availability == "available"


async def test_the_sdk_reads_the_fakes_errors(sdk: Sdk) -> None:
    with pytest.raises(ScalewayException) as missing:
        await sdk(sdk.api.get_server, server_id="00000000-0000-4000-8000-000000000000")
    assert missing.value.status_code == 404
    await sdk.fake.cloud.add_rule(parse_rule("capacity_shortage", calls=1))
    with pytest.raises(ScalewayException) as stock:
        await sdk(sdk.api._create_server, commercial_type=TYPE, protected=False, project=PROJECT)
    assert stock.value.status_code == 400
    assert stock.value.response.json()["type"] == "out_of_stock"
    with pytest.raises(ScalewayException) as invalid:
        await sdk(sdk.api._create_server, commercial_type="NO-SUCH-TYPE", protected=False, project=PROJECT)
    assert invalid.value.response.json()["type"] == "invalid_request_error"
    sdk.fake.rate_limit(1)
    with pytest.raises(ScalewayException) as limited:
        await sdk(sdk.api.list_servers)
    assert limited.value.status_code == 429


async def test_the_fake_sends_no_field_the_sdk_does_not_know(sdk: Sdk) -> None:
    machine = await sdk.fake.cloud.create(
        zone=ZONE, instance_type=TYPE, name="fields", image="ubuntu_jammy", tags={"ikoma": "install-a"}
    )
    sdk.clock.advance(60)  # running: poweroff is allowed
    unknown = unknown_fields(await sdk.raw("/servers"), ListServersResponse, "servers")
    unknown += unknown_fields(await sdk.raw(f"/servers/{machine.id}"), type(_get_response()), "server")
    unknown += unknown_fields(await sdk.raw("/products/servers"), ListServersTypesResponse, "products")
    unknown += unknown_fields(
        await sdk.raw("/products/servers/availability"), GetServerTypesAvailabilityResponse, "availability"
    )
    async with httpx.AsyncClient(base_url=sdk.url, headers={"X-Auth-Token": SECRET}) as client:
        acted = await client.post(
            f"/instance/v1/zones/{ZONE}/servers/{machine.id}/action", json={"action": "poweroff"}
        )
    unknown += unknown_fields(acted.json(), ServerActionResponse, "action")
    assert unknown == []


def _get_response() -> Any:
    from scaleway.instance.v1 import GetServerResponse

    return GetServerResponse(server=None)
