"""The Scaleway adapter over real HTTP against the local fake of the Instance API (tests/fakes), which
the Mock simulator drives: the Mock's scenario suite, seen through Scaleway's API.

Time on the simulator's side is a manual clock (boots take no wall time); timeouts and retries happen
for real over the socket: the client's timeout is generous (a loaded machine never times a normal
call out) except in the tests about timeouts, which use 1 s against answers held 3 s; its backoff
sleeps are recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from ikoma.providers import base
from ikoma.providers.base import InstanceRequest, PowerState, ProviderError
from ikoma.providers.mock.machines import ManualClock
from ikoma.providers.mock.scenarios import parse_rule
from ikoma.providers.registry import providers_from
from ikoma.providers.scaleway import adapter as scaleway
from ikoma.providers.scaleway.adapter import ScalewayProvider
from ikoma.providers.scaleway.client import InstanceClient
from ikoma.services.catalog_seed import SCALEWAY_OFFERS
from ikoma.settings import Settings, SettingsError, load_settings
from ikoma.storage.database import Database
from tests.fakes.scaleway_api import ScalewayFake, scaleway_cloud, serving

ZONE = "fr-par-2"
TYPE = "GPU-3070-S"
SECRET = "scw-secret-0f1e2d3c"
PROJECT = "22222222-2222-4222-8222-222222222222"
OWNER = "install-a"
BOOTED = 10.0  # seconds of the simulator's clock after which any type has booted
RETRIES = 3


@dataclass
class Harness:
    fake: ScalewayFake
    provider: ScalewayProvider
    clock: ManualClock
    url: str
    slept: list[float] = field(default_factory=list)

    def advance(self, seconds: float = BOOTED) -> None:
        self.clock.advance(seconds)

    async def create(self, name: str = "m", instance_type: str = TYPE) -> str:
        return (await self.provider.create(request(name, instance_type))).provider_id

    async def state(self, provider_id: str) -> PowerState | None:
        found = await self.provider.get(ZONE, provider_id)
        return found.state if found is not None else None


def request(name: str, instance_type: str = TYPE, user_data: str | None = None) -> InstanceRequest:
    return InstanceRequest(
        zone=ZONE,
        instance_type=instance_type,
        name=name,
        image="ubuntu_jammy",
        tags={base.OWNER_TAG: OWNER, base.INSTANCE_TAG: f"instance-{name}"},
        user_data=user_data,
    )


def provider_for(
    url: str, slept: list[float], *, secret: str = SECRET, page_size: int = 100, timeout: float = 10.0
) -> ScalewayProvider:
    async def record(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    client = InstanceClient(
        secret, api_url=url, timeout=timeout, retries=RETRIES, backoff=0.01, page_size=page_size, sleep=record
    )
    return ScalewayProvider(client, project_id=PROJECT, zones=("fr-par-1", ZONE), image="ubuntu_jammy")


@pytest.fixture
async def scw() -> AsyncIterator[Harness]:
    clock = ManualClock()
    fake = ScalewayFake(scaleway_cloud(clock=clock), secret_key=SECRET, project_id=PROJECT, hang_seconds=3.0)
    async with serving(fake.app) as url:
        slept: list[float] = []
        provider = provider_for(url, slept)
        yield Harness(fake, provider, clock, url, slept)
        await provider.close()


async def test_a_server_is_created_stopped_then_powered_on_boots_and_terminate_makes_it_gone(
    scw: Harness,
) -> None:
    created = await scw.provider.create(request("web", user_data="#cloud-config\nruncmd: [ikoma-enrol]\n"))
    assert created.state is PowerState.STARTING
    assert created.raw_state == "starting"
    assert created.public_ip is not None
    assert created.tags == {base.OWNER_TAG: OWNER, base.INSTANCE_TAG: "instance-web"}
    # the API's order: POST /servers (stopped), its cloud-init, then poweron, allowed while stopped
    servers = f"/instance/v1/zones/{ZONE}/servers"
    assert [(m, p) for m, p in scw.fake.requests if m in ("POST", "PATCH")] == [
        ("POST", servers),
        ("PATCH", f"{servers}/{created.provider_id}/user_data/cloud-init"),
        ("POST", f"{servers}/{created.provider_id}/action"),
    ]
    body = scw.fake.bodies[0]
    assert body["commercial_type"] == TYPE
    assert body["project"] == PROJECT
    assert sorted(body["tags"]) == sorted([f"{base.OWNER_TAG}={OWNER}", f"{base.INSTANCE_TAG}=instance-web"])
    assert "user_data" not in body  # user data goes by its own route, never in the create body
    assert scw.fake.user_data[created.provider_id]["cloud-init"].startswith("#cloud-config")
    scw.advance()
    running = await scw.provider.get(ZONE, created.provider_id)
    assert running is not None
    assert running.state is PowerState.RUNNING
    assert "terminate" in running.allowed_actions
    owned = await scw.provider.list_owned(OWNER)
    assert [(o.provider_id, o.zone, o.tags[base.INSTANCE_TAG]) for o in owned] == [
        (created.provider_id, ZONE, "instance-web")
    ]
    assert await scw.provider.list_owned("another-install") == []
    await scw.provider.terminate(ZONE, created.provider_id)
    assert scw.fake.calls("POST", "/action") == 2  # poweron, terminate
    assert await scw.state(created.provider_id) is None
    assert await scw.provider.list_owned(OWNER) == []
    await scw.provider.terminate(ZONE, created.provider_id)  # gone already: success


async def test_a_stopped_server_is_deleted_with_its_volumes_since_it_cannot_terminate(scw: Harness) -> None:
    server = await scw.create()
    scw.advance()
    await scw.provider.stop(ZONE, server)
    scw.advance()
    stopped = await scw.provider.get(ZONE, server)
    assert stopped is not None
    assert stopped.state is PowerState.STOPPED
    assert "terminate" not in stopped.allowed_actions
    await scw.provider.terminate(ZONE, server)
    assert scw.fake.calls("DELETE", f"/servers/{server}") == 1
    assert scw.fake.calls("DELETE") == 2  # the server, then its local volume
    assert scw.fake.kept_volumes == set()
    assert await scw.state(server) is None


async def test_start_and_stop_call_only_allowed_actions(scw: Harness) -> None:
    server = await scw.create()
    await scw.provider.start(ZONE, server)  # starting already: nothing to ask
    assert scw.fake.calls("POST", "/action") == 1
    scw.advance()
    await scw.provider.stop(ZONE, server)
    assert await scw.state(server) is PowerState.STOPPING
    actions_before = scw.fake.calls("POST", "/action")
    with pytest.raises(ProviderError) as refused:
        await scw.provider.start(ZONE, server)  # stopping: poweron is not in allowed_actions
    assert refused.value.reason == base.ACTION_NOT_ALLOWED
    assert not refused.value.retryable
    assert scw.fake.calls("POST", "/action") == actions_before  # refused before any call
    scw.advance()
    await scw.provider.start(ZONE, server)
    scw.advance()
    assert await scw.state(server) is PowerState.RUNNING


async def test_create_timeout_but_exists_is_not_repeated_and_the_server_is_adopted_by_tag(
    scw: Harness,
) -> None:
    await scw.fake.cloud.add_rule(parse_rule("create_timeout_but_exists", calls=1))
    impatient = provider_for(scw.url, scw.slept, timeout=1.0)  # the fake holds the answer 3 s
    try:
        with pytest.raises(ProviderError) as raised:
            await impatient.create(request("slow"))
    finally:
        await impatient.close()
    assert raised.value.reason == base.PROVIDER_TIMEOUT
    assert raised.value.retryable
    assert scw.fake.calls("POST", "/servers") == 1  # never sent twice
    owned = await scw.provider.list_owned(OWNER)
    assert [o.tags[base.INSTANCE_TAG] for o in owned] == ["instance-slow"]
    adopted = owned[0]
    assert adopted.state is PowerState.STOPPED  # created, never powered on: the caller starts it
    await scw.provider.start(ZONE, adopted.provider_id)
    scw.advance()
    assert await scw.state(adopted.provider_id) is PowerState.RUNNING


async def test_capacity_shortage_creates_nothing_and_offers_show_it(scw: Harness) -> None:
    await scw.fake.cloud.add_rule(parse_rule("capacity_shortage", zone=ZONE, instance_type=TYPE))
    with pytest.raises(ProviderError) as raised:
        await scw.provider.create(request("gpu"))
    assert raised.value.reason == base.CAPACITY_SHORTAGE
    assert raised.value.retryable
    assert await scw.provider.list_owned(OWNER) == []
    offers = {(o.zone, o.instance_type): o for o in await scw.provider.offers()}
    assert not offers[(ZONE, TYPE)].available
    assert offers[("fr-par-1", TYPE)].available
    assert offers[(ZONE, "DEV1-S")].available


async def test_offers_read_prices_exactly_with_sizes_and_gpus(scw: Harness) -> None:
    offers = {(o.zone, o.instance_type): o for o in await scw.provider.offers()}
    seeded = {o.instance_type: o for o in SCALEWAY_OFFERS}
    assert {t for _, t in offers} == set(seeded)
    h100 = offers[(ZONE, "H100-SXM-2-80G")]
    assert h100.hourly_price_eur == Decimal("6.018")
    assert isinstance(h100.hourly_price_eur, Decimal)
    assert (h100.region, h100.vcpus, h100.ram_mb) == ("fr-par", 32, 240 * 1024)
    assert (h100.gpu_count, h100.gpu_model, h100.gpu_memory_mb) == (2, "H100 SXM", 80 * 1024)
    dev = offers[("fr-par-1", "DEV1-S")]
    assert (dev.hourly_price_eur, dev.gpu_count, dev.gpu_model, dev.gpu_memory_mb) == (
        Decimal("0.0088"),
        0,
        None,
        None,
    )


async def test_terminate_failing_fewer_times_than_the_retries_succeeds_in_one_call(scw: Harness) -> None:
    server = await scw.create()
    scw.advance()
    await scw.fake.cloud.add_rule(parse_rule(f"terminate_fails:{RETRIES - 1}"))
    await scw.provider.terminate(ZONE, server)
    assert scw.fake.calls("POST", f"/servers/{server}/action") == 1 + RETRIES  # poweron, 2 failed, 1 done
    assert len(scw.slept) == RETRIES - 1
    assert await scw.state(server) is None


async def test_terminate_failing_more_times_raises_retryable_then_a_later_call_terminates(
    scw: Harness,
) -> None:
    server = await scw.create()
    scw.advance()
    await scw.fake.cloud.add_rule(parse_rule(f"terminate_fails:{RETRIES + 2}"))
    with pytest.raises(ProviderError) as raised:
        await scw.provider.terminate(ZONE, server)
    assert raised.value.reason == base.PROVIDER_UNAVAILABLE
    assert raised.value.retryable
    assert raised.value.status == 503
    assert await scw.state(server) is PowerState.RUNNING
    await scw.provider.terminate(ZONE, server)  # the 5th failure is retried, the 6th call goes through
    assert await scw.state(server) is None


async def test_a_server_deleted_behind_the_back_is_gone_from_get_and_list(scw: Harness) -> None:
    server = await scw.create()
    scw.advance()
    assert await scw.fake.cloud.vanish(ZONE, server)
    assert await scw.provider.get(ZONE, server) is None
    assert await scw.provider.list_owned(OWNER) == []
    await scw.provider.terminate(ZONE, server)  # gone: success
    with pytest.raises(ProviderError) as raised:
        await scw.provider.start(ZONE, server)
    assert raised.value.reason == base.NOT_FOUND


async def test_boot_never_finishes_stays_starting_and_can_be_terminated(scw: Harness) -> None:
    await scw.fake.cloud.add_rule(parse_rule("boot_never_finishes", calls=1))
    server = await scw.create()
    scw.advance(3600)
    assert await scw.state(server) is PowerState.STARTING
    await scw.provider.terminate(ZONE, server)
    assert await scw.state(server) is None


async def test_ip_reuse_shows_a_dead_servers_ip_on_a_new_one(scw: Harness) -> None:
    first = await scw.provider.create(request("first"))
    scw.advance()
    await scw.provider.terminate(ZONE, first.provider_id)
    scw.advance()
    await scw.fake.cloud.add_rule(parse_rule("ip_reuse", calls=1))
    second = await scw.provider.create(request("second"))
    assert second.public_ip == first.public_ip
    assert second.provider_id != first.provider_id


async def test_5xx_on_reads_is_retried_but_a_create_is_not(scw: Harness) -> None:
    server = await scw.create()
    await scw.fake.cloud.add_rule(parse_rule("provider_5xx", calls=2))
    assert await scw.state(server) is PowerState.STARTING  # two 503s, then the answer
    assert len(scw.slept) == 2
    await scw.fake.cloud.add_rule(parse_rule("provider_5xx", calls=1))
    posts = scw.fake.calls("POST", "/servers")
    with pytest.raises(ProviderError) as raised:
        await scw.provider.create(request("b"))
    assert raised.value.reason == base.PROVIDER_UNAVAILABLE
    assert raised.value.retryable
    assert scw.fake.calls("POST", "/servers") == posts + 1  # not repeated: the caller adopts or retries
    assert [o.provider_id for o in await scw.provider.list_owned(OWNER)] == [server]


async def test_429_is_retried_for_every_call_after_retry_after(scw: Harness) -> None:
    scw.fake.rate_limit(2)
    server = await scw.create()  # refused twice before anything happened: repeating is safe
    assert scw.fake.calls("POST", "/servers") == 3
    assert scw.slept == [0.0, 0.0]  # the fake's Retry-After: 0
    assert [o.provider_id for o in await scw.provider.list_owned(OWNER)] == [server]
    scw.fake.rate_limit(RETRIES + 1)
    with pytest.raises(ProviderError) as raised:
        await scw.provider.get(ZONE, server)
    assert raised.value.reason == base.RATE_LIMITED
    assert raised.value.retryable
    assert raised.value.status == 429


async def test_latency_past_the_timeout_is_retried_then_raises_provider_timeout(scw: Harness) -> None:
    server = await scw.create()
    impatient = provider_for(scw.url, scw.slept, timeout=1.0)
    try:
        await scw.fake.cloud.add_rule(parse_rule("latency:0.1", calls=1))
        found = await impatient.get(ZONE, server)  # late but within the timeout
        assert found is not None
        assert scw.slept == []
        await scw.fake.cloud.add_rule(parse_rule("latency:3", calls=1))
        found = await impatient.get(ZONE, server)  # the first try timed out, the second answered
        assert found is not None
        assert found.state is PowerState.STARTING
        assert len(scw.slept) == 1
        await scw.fake.cloud.add_rule(parse_rule("latency:3"))
        gets = scw.fake.calls("GET", f"/servers/{server}")
        with pytest.raises(ProviderError) as raised:
            await impatient.get(ZONE, server)
    finally:
        await impatient.close()
        await scw.fake.cloud.clear_rules()
    assert raised.value.reason == base.PROVIDER_TIMEOUT
    assert raised.value.retryable
    assert scw.fake.calls("GET", f"/servers/{server}") == gets + RETRIES + 1


async def test_a_wrong_key_is_auth_failed_at_once_and_never_in_the_message(scw: Harness) -> None:
    wrong = "scw-wrong-key-99"
    provider = provider_for(scw.url, scw.slept, secret=wrong)
    try:
        with pytest.raises(ProviderError) as raised:
            await provider.list_owned(OWNER)
    finally:
        await provider.close()
    assert raised.value.reason == base.AUTH_FAILED
    assert not raised.value.retryable
    assert scw.fake.calls("GET") == 1
    assert wrong not in str(raised.value)
    assert SECRET not in str(raised.value)


async def test_list_owned_reads_every_page_in_every_zone(scw: Harness) -> None:
    provider = provider_for(scw.url, scw.slept, page_size=2)
    try:
        made = {await scw.create(f"s{i}", "DEV1-S") for i in range(5)}
        await scw.fake.cloud.create(
            zone="fr-par-1", instance_type="DEV1-S", name="par1", image="x", tags={base.OWNER_TAG: OWNER}
        )
        await scw.fake.cloud.create(
            zone=ZONE, instance_type="DEV1-S", name="other", image="x", tags={"team": "b"}
        )
        owned = await provider.list_owned(OWNER)
    finally:
        await provider.close()
    assert {o.provider_id for o in owned if o.zone == ZONE} == made
    assert [o.name for o in owned if o.zone == "fr-par-1"] == ["par1"]
    assert scw.fake.calls("GET", f"/zones/{ZONE}/servers") == 3  # 2 + 2 + 1


async def test_a_failure_after_the_create_deletes_the_stopped_server_it_left(scw: Harness) -> None:
    scw.fake.fail_next("PATCH", "/user_data/cloud-init", times=RETRIES + 1)
    with pytest.raises(ProviderError) as raised:
        await scw.provider.create(request("half", user_data="#cloud-config\n"))
    assert raised.value.reason == base.PROVIDER_UNAVAILABLE
    assert scw.fake.calls("POST", "/action") == 0  # never powered on
    assert scw.fake.calls("DELETE", "/servers/" + scw.fake.requests[1][1].split("/")[6]) == 1
    assert scw.fake.kept_volumes == set()  # its volume deleted too
    assert await scw.provider.list_owned(OWNER) == []


# --- settings ----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_scaleway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own SCALEWAY_* / SCW_* variables never leak into these tests."""
    for name in (
        "SCALEWAY_SECRET_KEY",
        "SCALEWAY_API_TOKEN",
        "SCW_SECRET_KEY",
        "SCALEWAY_SECRET_KEY_FILE",
        "SCALEWAY_PROJECT_ID",
        "SCALEWAY_ZONES",
    ):
        monkeypatch.delenv(name, raising=False)


def test_no_secret_key_means_no_scaleway_provider() -> None:
    assert scaleway.provider_from_settings(Settings()) is None


async def test_the_key_file_comes_first_and_aliases_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALEWAY_PROJECT_ID", PROJECT)
    monkeypatch.setenv("SCW_SECRET_KEY", "from-alias")
    assert scaleway.secret_key(Settings()) == "from-alias"
    key_file = tmp_path / "scaleway_secret_key"
    key_file.write_text("from-file\n")
    monkeypatch.setenv("SCALEWAY_SECRET_KEY_FILE", str(key_file))
    assert scaleway.secret_key(Settings()) == "from-file"
    settings = Settings(SCALEWAY_ZONES="fr-par-2, nl-ams-1")
    assert "from-alias" not in repr(settings)
    assert "from-file" not in repr(settings)
    provider = scaleway.provider_from_settings(settings)
    assert provider is not None
    assert provider.zones == ("fr-par-2", "nl-ams-1")
    await provider.close()


def test_a_key_without_a_project_or_an_unreadable_key_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SCALEWAY_PROJECT_ID") as no_project:
        load_settings(SCALEWAY_SECRET_KEY="scw-never-printed")
    assert "scw-never-printed" not in str(no_project.value)
    missing = tmp_path / "nope"
    with pytest.raises(SettingsError, match="SCALEWAY_SECRET_KEY_FILE") as raised:
        scaleway.provider_from_settings(
            Settings(SCALEWAY_SECRET_KEY_FILE=str(missing), SCALEWAY_PROJECT_ID=PROJECT)
        )
    assert "No such file" in str(raised.value)


def test_a_settings_error_never_shows_the_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCW_SECRET_KEY", "scw-do-not-print")
    monkeypatch.setenv("IKOMA_STALE_AFTER", "1")  # breaks a rule over several settings
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "IKOMA_STALE_AFTER" in str(raised.value)
    assert "scw-do-not-print" not in str(raised.value)


async def test_the_registry_adds_scaleway_once_a_key_is_configured(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'unused.db'}")
    try:
        assert providers_from(Settings(IKOMA_PROVIDER_MOCK=False), db) == {}
        configured = providers_from(
            Settings(IKOMA_PROVIDER_MOCK=False, SCALEWAY_SECRET_KEY="k", SCALEWAY_PROJECT_ID=PROJECT), db
        )
        assert list(configured) == ["scaleway"]
        assert isinstance(configured["scaleway"], ScalewayProvider)
        await configured["scaleway"].close()
    finally:
        await db.dispose()
