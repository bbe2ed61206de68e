"""The embedded stack for real: start, use every service, stop, start again."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path

import aioboto3
import hvac
import nats
import pytest
from botocore.exceptions import ClientError

from ops.services.base import ServiceError
from ops.services.nats import Nats
from ops.services.postgres import Postgres
from ops.services.s3 import SeaweedS3
from ops.services.vault import Vault
from ops.stack import SERVICES, Stack, StackState, stack_status


def _groups_alive(pids: dict[str, int | None]) -> list[str]:
    """Services whose process group still has any member (service or its children)."""
    alive = []
    for name, pid in pids.items():
        assert pid is not None, name
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:  # the group exists, owned by another user (postgres)
            pass
        alive.append(name)
    return alive


def _ports(state: StackState) -> dict[str, object]:
    assert state.postgres and state.nats and state.s3 and state.vault
    return {
        "postgres": state.postgres.port,
        "nats": (state.nats.port, state.nats.monitor_port),
        "s3": state.s3.ports,
        "vault": state.vault.port,
    }


async def _check_nats(url: str) -> None:
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        await js.add_stream(name="STACKTEST", subjects=["stacktest.>"])
        ack = await js.publish("stacktest.hello", b"hi", timeout=2)
        assert (ack.stream, ack.seq) == ("STACKTEST", 1)
        sub = await js.pull_subscribe("stacktest.>", durable="check")
        [msg] = await sub.fetch(1, timeout=2)
        assert msg.data == b"hi"
        await msg.ack()
    finally:
        await nc.close()


async def _check_s3(state: StackState) -> None:
    assert state.s3 is not None
    session = aioboto3.Session()
    kwargs = {
        "endpoint_url": state.s3.endpoint,
        "aws_access_key_id": state.s3.access_key,
        "aws_secret_access_key": state.s3.secret_key,
        "region_name": "us-east-1",
    }
    async with session.client("s3", **kwargs) as s3:
        names = [b["Name"] for b in (await s3.list_buckets())["Buckets"]]
        assert state.s3.bucket in names  # the stack creates the default bucket
        await s3.create_bucket(Bucket="stack-test")
        await s3.put_object(Bucket="stack-test", Key="a/b.txt", Body=b"payload")
        got = await s3.get_object(Bucket="stack-test", Key="a/b.txt")
        async with got["Body"] as body:
            assert await body.read() == b"payload"
    wrong = dict(kwargs, aws_secret_access_key="not-the-secret")
    async with session.client("s3", **wrong) as s3:
        with pytest.raises(ClientError):
            await s3.list_buckets()


def _check_vault(state: StackState) -> hvac.Client:
    assert state.vault is not None
    client = hvac.Client(url=state.vault.addr, token=state.vault.token, timeout=5)
    assert client.is_authenticated()
    client.secrets.kv.v2.create_or_update_secret(
        path="stack-test/db", secret={"password": "pw"}, mount_point="secret"
    )
    read = client.secrets.kv.v2.read_secret_version(
        path="stack-test/db", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"password": "pw"}
    return client


@pytest.mark.slow  # two graceful SeaweedFS shutdowns take ~8 s each
async def test_stack_start_use_stop_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stack = Stack(home)
    pids: dict[str, int | None] = {}
    try:
        state = await asyncio.to_thread(stack.start)
        assert stat.S_IMODE((home / "stack.json").stat().st_mode) == 0o600
        assert set(stack.alive()) == set(SERVICES)
        assert state.postgres and state.nats and state.s3 and state.vault

        assert stack.postgres().psql("SELECT 1", database="byteor").strip() == "1"
        await _check_nats(state.nats.url)
        await _check_s3(state)
        await asyncio.to_thread(_check_vault, state)

        # A second process finds the running stack through the state file.
        loaded = Stack.load(home)
        assert loaded is not None
        assert set(loaded.alive()) == set(SERVICES)
        dsn = f"postgresql://postgres@127.0.0.1:{state.postgres.port}/byteor"
        assert loaded.urls()["database_url"] == dsn
        status = stack_status(home)
        assert status["running"] is True
        printed = json.dumps(status)
        assert state.vault.token not in printed
        assert state.s3.secret_key not in printed

        # Starting again is a no-op.
        pids = {name: getattr(state, name).pid for name in SERVICES}
        again = await asyncio.to_thread(stack.start)
        assert {name: getattr(again, name).pid for name in SERVICES} == pids

        ports = _ports(state)
        await asyncio.to_thread(stack.stop)
        assert _groups_alive(pids) == []
        assert stack.alive() == ()
        assert stack_status(home)["running"] is False
        reloaded = Stack.load(home)
        assert reloaded is not None
        assert reloaded.alive() == ()

        # Restart on the same home: same ports, data kept (Vault is in-memory: token only).
        state = await asyncio.to_thread(stack.start)
        assert _ports(state) == ports
        pids = {name: getattr(state, name).pid for name in SERVICES}
        assert stack.postgres().psql("SELECT 1", database="byteor").strip() == "1"
        await _check_s3_object_survived(state)
        await _check_nats_stream_survived(state)
        await asyncio.to_thread(_check_vault, state)
    finally:
        await asyncio.to_thread(stack.stop)
    assert _groups_alive(pids) == []


async def _check_s3_object_survived(state: StackState) -> None:
    assert state.s3 is not None
    async with aioboto3.Session().client(
        "s3",
        endpoint_url=state.s3.endpoint,
        aws_access_key_id=state.s3.access_key,
        aws_secret_access_key=state.s3.secret_key,
        region_name="us-east-1",
    ) as s3:
        got = await s3.get_object(Bucket="stack-test", Key="a/b.txt")
        async with got["Body"] as body:
            assert await body.read() == b"payload"


async def _check_nats_stream_survived(state: StackState) -> None:
    assert state.nats is not None
    nc = await nats.connect(state.nats.url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        info = await nc.jetstream().stream_info("STACKTEST")
        assert info.state.messages == 1
    finally:
        await nc.close()


async def test_session_service_fixtures(
    pg: Postgres, nats_server: Nats, s3: SeaweedS3, vault: Vault
) -> None:
    pg.create_database("fixture_check")
    assert pg.psql("SELECT 1", database="fixture_check").strip() == "1"

    nc = await nats.connect(nats_server.url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        await js.add_stream(name="FIXTURECHECK", subjects=["fixturecheck.>"])
        await js.publish("fixturecheck.a", b"1", timeout=2)
    finally:
        await nc.close()
    # Fault tests crash and restart NATS on the same port and store.
    await asyncio.to_thread(nats_server.kill)
    assert not nats_server.running()
    await asyncio.to_thread(nats_server.start)
    await asyncio.to_thread(nats_server.restart)
    nc = await nats.connect(nats_server.url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        assert (await nc.jetstream().stream_info("FIXTURECHECK")).state.messages == 1
    finally:
        await nc.close()

    async with aioboto3.Session().client("s3", **s3.client_kwargs()) as client:
        await client.create_bucket(Bucket="fixture-check")
        await client.put_object(Bucket="fixture-check", Key="k", Body=b"v")
        got = await client.get_object(Bucket="fixture-check", Key="k")
        async with got["Body"] as body:
            assert await body.read() == b"v"

    kv = vault.client().secrets.kv.v2
    kv.create_or_update_secret(path="fixture-check", secret={"a": "b"}, mount_point="secret")
    read = kv.read_secret_version(
        path="fixture-check", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"a": "b"}


def test_failed_start_leaves_nothing_running(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stack = Stack(home)
    stack.start(("postgres", "nats", "vault"))
    state = stack.state
    assert state.vault is not None
    pids = {name: getattr(state, name).pid for name in ("postgres", "nats", "vault")}
    stack.stop()
    assert _groups_alive(pids) == []

    # Something else now holds Vault's port: the start fails and takes the others down.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", state.vault.port))
        squatter.listen()
        with pytest.raises(ServiceError, match="vault"):
            stack.start(("postgres", "nats", "vault"))
    assert stack.alive() == ()
    assert json.loads((home / "stack.json").read_text())["vault"]["port"] == state.vault.port
