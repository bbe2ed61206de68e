"""Deploy bundle building blocks against real services: object storage (SeaweedFS),
Vault (OpenBao), inline secrets (PostgreSQL data keys), and the secret canary."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import secrets
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from commands.object_store import (
    ObjectMissing,
    ObjectStore,
    ObjectStoreUnavailable,
    bundle_key,
    is_bundle_key,
)
from commands.secret_keys import MasterKey, MasterKeyring, SecretCipher
from domain.adapters import Adapter, VaultRef
from domain.bundle import SecretValues, Target, secret_location, sha256_of
from domain.credential import (
    CredentialClaims,
    SigningKey,
    credential_payload,
    encode_credential,
    key_set_json,
    keys_from_key_set,
    rfc3339,
)
from domain.tuning import Tuning
from ops.services.s3 import SeaweedS3
from ops.services.vault import Vault
from ops.stack import free_port_pair, free_ports
from workers.bundle_secrets import materialize, open_bundle_key, seal_bundle_key
from workers.bundle_tar import (
    BundleInputs,
    Ed25519Signer,
    build_bundle,
    new_secrets_key,
    unpack,
    verify_bundle,
)
from workers.errors import Permanent, Retryable
from workers.vault_refs import (
    VaultNotConfigured,
    VaultRefused,
    VaultResolver,
    VaultSecretMissing,
    VaultUnavailable,
)

pytestmark = pytest.mark.asyncio

PROJECT = uuid.UUID(int=2)
ENV = uuid.UUID(int=3)
SPEC = b"pipeline.name=demo\n"


def store_for(s3: SeaweedS3, bucket: str) -> ObjectStore:
    return ObjectStore(
        endpoint_url=s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        bucket=bucket,
    )


def bucket_name() -> str:
    return "bundles-" + uuid.uuid4().hex[:12]


def write_secret(vault: Vault, path: str, data: dict[str, object]) -> int:
    kv = vault.client().secrets.kv.v2
    written = kv.create_or_update_secret(path=path, secret=data, mount_point="secret")
    return int(written["data"]["version"])


def closed_port() -> int:
    return free_ports(1)[0]


# --- object storage ------------------------------------------------------------------


async def test_bundles_are_stored_once_under_their_content_address(s3: SeaweedS3) -> None:
    bucket = bucket_name()
    org = uuid.uuid4()
    data = os.urandom(300_000)
    # Several processes ensuring one bucket at once all succeed.
    stores = [store_for(s3, bucket) for _ in range(3)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        store = stores[0]
        first = await store.put_bundle(org, data)
        assert first.key == bundle_key(org, sha256_of(data)) and is_bundle_key(first.key)
        assert first.created and first.digest == sha256_of(data)
        again = await stores[1].put_bundle(org, data)
        assert again.key == first.key and not again.created
        info = await store.head(first.key)
        assert info is not None and info.size == len(data) and info.digest == first.digest
        assert await store.exists(first.key)
        chunks = [chunk async for chunk in store.stream(first.key, chunk_bytes=64 * 1024)]
        assert len(chunks) >= 5 and all(len(c) <= 64 * 1024 for c in chunks)
        assert b"".join(chunks) == data
        missing = bundle_key(org, sha256_of(b"nothing"))
        assert await store.head(missing) is None and not await store.exists(missing)
        with pytest.raises(ObjectMissing):
            await anext(store.stream(missing))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_an_unreachable_object_store_is_retryable() -> None:
    store = ObjectStore(
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        access_key="x",
        secret_key="y",
        bucket="nowhere",
        connect_timeout_s=0.5,
        max_attempts=1,
    )
    with pytest.raises(ObjectStoreUnavailable):
        await store.start()


# --- Vault -----------------------------------------------------------------------------


async def test_vault_refs_resolve_by_latest_and_pinned_version(vault: Vault) -> None:
    path = f"apps/{uuid.uuid4().hex}"
    v1 = await asyncio.to_thread(write_secret, vault, path, {"user": "app", "pw": "one"})
    await asyncio.to_thread(write_secret, vault, path, {"user": "app", "pw": "two", "n": 7})
    resolver = VaultResolver(vault.addr, vault.token)
    latest = VaultRef(mount="secret", path=path, field="pw")
    pinned = VaultRef(mount="secret", path=path, field="pw", version=v1)
    number = VaultRef(mount="secret", path=path, field="n")
    got = await resolver.resolve([latest, pinned, number, latest])
    assert got == {latest: "two", pinned: "one", number: "7"}
    assert vault.token not in repr(resolver)


async def test_missing_secrets_fail_permanently_naming_the_path_not_the_value(
    vault: Vault,
) -> None:
    path = f"apps/{uuid.uuid4().hex}"
    await asyncio.to_thread(write_secret, vault, path, {"pw": "do-not-show-me"})
    resolver = VaultResolver(vault.addr, vault.token)
    cases = [
        VaultRef(mount="secret", path=f"{path}-absent", field="pw"),
        VaultRef(mount="secret", path=path, field="other"),
        VaultRef(mount="secret", path=path, field="pw", version=99),
    ]
    for ref in cases:
        with pytest.raises(VaultSecretMissing) as caught:
            await resolver.resolve([ref])
        assert isinstance(caught.value, Permanent)
        assert ref.path in str(caught.value) and "do-not-show-me" not in str(caught.value)
    # A deleted latest version is missing too.
    kv = vault.client().secrets.kv.v2
    await asyncio.to_thread(kv.delete_latest_version_of_secret, path=path, mount_point="secret")
    with pytest.raises(VaultSecretMissing):
        await resolver.resolve([VaultRef(mount="secret", path=path, field="pw")])


async def test_a_bad_token_is_refused_and_an_unreachable_vault_is_retryable(
    vault: Vault,
) -> None:
    ref = VaultRef(mount="secret", path="apps/any", field="pw")
    with pytest.raises(VaultRefused) as refused:
        await VaultResolver(vault.addr, "not-a-token").resolve([ref])
    assert isinstance(refused.value, Permanent) and "not-a-token" not in str(refused.value)
    down = VaultResolver(f"http://127.0.0.1:{closed_port()}", vault.token, timeout_s=1)
    with pytest.raises(VaultUnavailable) as caught:
        await down.resolve([ref])
    assert isinstance(caught.value, Retryable) and "apps/any" in str(caught.value)


async def test_a_sealed_vault_answering_503_is_retryable(tmp_path: Path) -> None:
    # A Vault of its own: sealing the session's would break every later test.
    server = Vault(tmp_path / "sealed", free_port_pair(), secrets.token_urlsafe(24))
    await asyncio.to_thread(server.start)
    try:
        await asyncio.to_thread(write_secret, server, "apps/x", {"pw": "v"})
        ref = VaultRef(mount="secret", path="apps/x", field="pw")
        resolver = VaultResolver(server.addr, server.token)
        assert await resolver.resolve([ref]) == {ref: "v"}
        await asyncio.to_thread(server.client().sys.seal)
        with pytest.raises(VaultUnavailable) as caught:
            await resolver.resolve([ref])
        assert isinstance(caught.value, Retryable) and "VaultDown" in str(caught.value)
    finally:
        await asyncio.to_thread(server.kill)


async def test_vault_refs_without_vault_configuration_fail_closed(pool: asyncpg.Pool) -> None:
    assert VaultResolver.configured(None, "t") is None
    assert VaultResolver.configured("http://127.0.0.1:1", "") is None
    cipher = SecretCipher(pool, MasterKeyring([MasterKey("m1", os.urandom(32))]))
    adapters = (
        Adapter(
            name="db",
            family="postgres",
            endpoint="postgresql://db.example/app",
            secret_refs={"password": VaultRef(mount="secret", path="db", field="pw")},
        ),
    )
    with pytest.raises(VaultNotConfigured) as caught:
        await materialize(adapters, org_id=uuid.uuid4(), cipher=cipher, vault=None)
    assert isinstance(caught.value, Permanent) and "VAULT_ADDR" in str(caught.value)


# --- materialization, build, upload, verify: the canary -------------------------------


class Fixture:
    """An organization with a signing key, sealed adapters and a Vault secret."""

    def __init__(self, pool: asyncpg.Pool, vault: Vault, *, adapters: int = 2) -> None:
        self.org = uuid.uuid4()
        self.cipher = SecretCipher(pool, MasterKeyring([MasterKey("m1", os.urandom(32))]))
        self.vault = vault
        self.signer = Ed25519Signer("kid-" + uuid.uuid4().hex[:8], Ed25519PrivateKey.generate())
        self.key = SigningKey(kid=self.signer.kid, public_key=self.signer.public_key)
        self.inline_canary = "inline-canary-" + uuid.uuid4().hex
        self.vault_canary = "vault-canary-" + uuid.uuid4().hex
        self.vault_path = f"apps/{uuid.uuid4().hex}"
        self.count = adapters
        self.adapters: tuple[Adapter, ...] = ()

    async def prepare(self) -> None:
        await asyncio.to_thread(
            write_secret, self.vault, self.vault_path, {"token": self.vault_canary}
        )
        made = []
        for i in range(self.count):
            name = f"a{i:02d}"
            where = secret_location(name, "password")
            sealed = await self.cipher.encrypt(
                self.org, f"{self.inline_canary}-{i}".encode(), where
            )
            made.append(
                Adapter(
                    name=name,
                    family="http",
                    endpoint=f"https://sink{i}.example/in",
                    secret_refs={
                        "password": sealed,
                        "token": VaultRef(mount="secret", path=self.vault_path, field="token"),
                    },
                )
            )
        self.adapters = tuple(made)

    def credential(self, now: datetime) -> str:
        claims = CredentialClaims(
            v=1,
            kid=self.signer.kid,
            org_id=str(self.org),
            project_id=str(PROJECT),
            environment_id=str(ENV),
            environment_posture="prod",
            spec_hash=sha256_of(SPEC),
            capabilities=[],
            issued_at=rfc3339(now),
            expires_at=rfc3339(now + timedelta(hours=24)),
            issued_by=str(uuid.uuid4()),
            approval_id=str(uuid.uuid4()),
        )
        payload = credential_payload(claims)
        return encode_credential(payload, self.signer.sign(payload))

    def inputs(self, deployment: uuid.UUID, now: datetime) -> BundleInputs:
        return BundleInputs(
            org_id=self.org,
            project_id=PROJECT,
            environment_id=ENV,
            environment_posture="prod",
            deployment_id=deployment,
            config_bundle_id=uuid.uuid4(),
            version_id=uuid.uuid4(),
            spec_kv=SPEC,
            spec_hash=sha256_of(SPEC),
            tuning=Tuning(profile="default"),
            adapters=self.adapters,
            parameters={"region": "eu-1"},
            approval_credential=self.credential(now),
            signing_keys_json=key_set_json([self.key]),
        )

    def canaries(self) -> list[bytes]:
        values = [self.vault_canary, *(f"{self.inline_canary}-{i}" for i in range(self.count))]
        return [v.encode() for v in values] + [self.inline_canary.encode()]


async def test_secret_plaintext_reaches_only_the_encrypted_file(
    pool: asyncpg.Pool, vault: Vault, s3: SeaweedS3, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fx = Fixture(pool, vault)
    await fx.prepare()
    now = datetime.now(UTC)
    deployment = uuid.uuid4()
    materialized = await materialize(
        fx.adapters,
        org_id=fx.org,
        cipher=fx.cipher,
        vault=VaultResolver(vault.addr, vault.token),
    )
    assert fx.vault_canary not in repr(materialized) and fx.inline_canary not in repr(materialized)
    key = new_secrets_key()
    sealed_key = await seal_bundle_key(fx.cipher, org_id=fx.org, deployment_id=deployment, key=key)
    built = build_bundle(
        fx.inputs(deployment, now), materialized, signer=fx.signer, secrets_key=key
    )
    logging.getLogger("byteor.test").info("built %r from %r", built, materialized)

    store = store_for(s3, bucket_name())
    async with store:
        stored = await store.put_bundle(fx.org, built.data)
        downloaded = await store.read(stored.key)
    assert downloaded == built.data

    # Outside secrets.json.enc: not in the archive, its files, the object or the logs.
    files = unpack(downloaded)
    scanned = {
        "tar.gz": downloaded,
        "tar": gzip.decompress(downloaded),
        "logs": caplog.text.encode(),
        "sealed key": sealed_key.ciphertext.encode(),
        **{name: data for name, data in files.items() if name != "secrets.json.enc"},
    }
    for canary in fx.canaries():
        for where, data in scanned.items():
            assert canary not in data, where
        assert canary not in files["secrets.json.enc"]

    # The agent: key set from the signing-keys route, key from the bundle route.
    agent_key = await open_bundle_key(
        fx.cipher, org_id=fx.org, deployment_id=deployment, sealed=sealed_key
    )
    verified = verify_bundle(
        downloaded,
        keys=keys_from_key_set(key_set_json([fx.key])),
        now=now + timedelta(minutes=1),
        secrets_key=agent_key,
        target=Target(org_id=fx.org, environment_id=ENV, deployment_id=deployment),
        digest=stored.digest,
    )
    assert verified.approval is not None
    assert verified.secrets is not None
    revealed = verified.secrets.reveal()
    assert revealed[secret_location("a00", "password")] == f"{fx.inline_canary}-0"
    assert revealed[secret_location("a01", "token")] == fx.vault_canary


async def test_building_a_bundle_with_twenty_adapters_is_fast(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """Issue 6 targets a build p50 under 500 ms; this measures materialize + build."""
    fx = Fixture(pool, vault, adapters=20)
    await fx.prepare()
    resolver = VaultResolver(vault.addr, vault.token)
    now = datetime.now(UTC)
    timings = []
    for _ in range(50):
        deployment = uuid.uuid4()
        started = time.perf_counter()
        materialized = await materialize(
            fx.adapters, org_id=fx.org, cipher=fx.cipher, vault=resolver
        )
        built = build_bundle(
            fx.inputs(deployment, now),
            materialized,
            signer=fx.signer,
            secrets_key=new_secrets_key(),
        )
        timings.append((time.perf_counter() - started) * 1000)
        assert isinstance(materialized, SecretValues) and len(materialized) == 40 and built.size > 0
    p50 = statistics.median(timings)
    p95 = statistics.quantiles(timings, n=20)[-1]
    print(f"bundle build, 20 adapters: p50 {p50:.1f} ms, p95 {p95:.1f} ms over 50 builds")
    assert p50 < 500
