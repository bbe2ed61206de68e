"""Envelope encryption of inline secrets against real PostgreSQL: data keys per
organization wrapped by configured master keys, rotation, and what the table holds."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from commands import key_rotation
from commands.secret_keys import (
    DecryptionFailed,
    MasterKey,
    MasterKeyring,
    MasterKeyUnavailable,
    SecretCipher,
    UnknownDataKey,
)
from domain.adapters import InlineRef, Plaintext, UnsealedAdapter, VaultRef, seal
from schema.pg import create_pool

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parents[2]


def master(key_id: str) -> MasterKey:
    return MasterKey(key_id, os.urandom(32))


def ring(*keys: MasterKey) -> MasterKeyring:
    return MasterKeyring(keys)


async def test_inline_secrets_round_trip_and_seal_a_bundles_adapters(pool: asyncpg.Pool) -> None:
    keys = ring(master("m1"))
    cipher = SecretCipher(pool, keys)
    org = uuid.uuid4()
    ref = await cipher.encrypt(org, b"hunter2", "adapters/db/secretRefs/password")
    assert ref.key_id.startswith("dk_") and b"hunter2" not in base64.urlsafe_b64decode(
        ref.ciphertext + "=="
    )
    assert (
        await cipher.decrypt(org, ref.key_id, ref.ciphertext, "adapters/db/secretRefs/password")
        == b"hunter2"
    )
    # The same plaintext twice: different ciphertexts (fresh nonce), one data key.
    again = await cipher.encrypt(org, b"hunter2", "adapters/db/secretRefs/password")
    assert again.key_id == ref.key_id and again.ciphertext != ref.ciphertext

    vault = VaultRef(mount="secret", path="app/db", field="password")
    adapters = (
        UnsealedAdapter(
            name="db",
            family="postgres",
            endpoint="postgresql://db.example:5432/app",
            secret_refs={"password": Plaintext("s3cr3t-value"), "cert": vault},
        ),
    )
    (sealed,) = seal(adapters, await cipher.sealer(org))
    inline = sealed.secret_refs["password"]
    assert isinstance(inline, InlineRef) and inline.key_id == ref.key_id
    assert sealed.secret_refs["cert"] == vault
    # A fresh process (empty cache) decrypts it from the table.
    fresh = SecretCipher(pool, keys)
    plain = await fresh.decrypt(
        org, inline.key_id, inline.ciphertext, "adapters/db/secretRefs/password"
    )
    assert plain == b"s3cr3t-value"


async def test_a_ciphertext_decrypts_only_in_its_org_under_its_key_and_field(
    pool: asyncpg.Pool,
) -> None:
    keys = ring(master("m1"))
    cipher = SecretCipher(pool, keys)
    org, other_org = uuid.uuid4(), uuid.uuid4()
    ref = await cipher.encrypt(org, b"only-here", "adapters/a/secretRefs/token")
    theirs = await cipher.encrypt(other_org, b"theirs", "adapters/a/secretRefs/token")

    # Moved to another organization: that org has no such key id.
    with pytest.raises(UnknownDataKey, match=f"organization {other_org} has no data key"):
        await cipher.decrypt(other_org, ref.key_id, ref.ciphertext, "adapters/a/secretRefs/token")
    # Named under another key (the other org's key, or one that does not exist).
    with pytest.raises(UnknownDataKey):
        await cipher.decrypt(org, theirs.key_id, ref.ciphertext, "adapters/a/secretRefs/token")
    with pytest.raises(UnknownDataKey):
        await cipher.decrypt(org, "dk_" + "0" * 32, ref.ciphertext, "adapters/a/secretRefs/token")
    # Moved to another field of the same organization.
    with pytest.raises(DecryptionFailed, match="does not authenticate"):
        await cipher.decrypt(org, ref.key_id, ref.ciphertext, "adapters/b/secretRefs/token")
    # Tampered: every byte flipped in turn, truncated, not base64, empty.
    blob = bytearray(base64.urlsafe_b64decode(ref.ciphertext + "=="))
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x40
        text = base64.urlsafe_b64encode(bytes(bad)).decode().rstrip("=")
        with pytest.raises(DecryptionFailed):
            await cipher.decrypt(org, ref.key_id, text, "adapters/a/secretRefs/token")
    for text in (ref.ciphertext[:-4], "!!!not base64!!!", "", "AQ"):
        with pytest.raises(DecryptionFailed):
            await cipher.decrypt(org, ref.key_id, text, "adapters/a/secretRefs/token")
    # A wrapped data key swapped onto another organization's row does not unwrap.
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE org_data_keys SET wrapped_key = "
            "(SELECT wrapped_key FROM org_data_keys WHERE org_id = $1) WHERE org_id = $2",
            org,
            other_org,
        )
    with pytest.raises(DecryptionFailed, match="the wrapped data key"):
        await SecretCipher(pool, keys).decrypt(
            other_org, theirs.key_id, theirs.ciphertext, "adapters/a/secretRefs/token"
        )


async def test_rotation_rewraps_every_key_and_old_master_keys_can_go(pool: asyncpg.Pool) -> None:
    old, new = master("2025"), master("2026")
    before = SecretCipher(pool, ring(old))
    secrets: list[tuple[uuid.UUID, InlineRef, bytes]] = []
    for i in range(7):
        org = uuid.uuid4()
        value = f"secret-{i}".encode()
        secrets.append((org, await before.encrypt(org, value), value))

    # Step 1: the new key configured first, the old one still there.
    during = SecretCipher(pool, ring(new, old))
    for org, ref, value in secrets:
        assert await during.decrypt(org, ref.key_id, ref.ciphertext) == value
    late = uuid.uuid4()
    secrets.append((late, await during.encrypt(late, b"late"), b"late"))
    assert await key_rotation.pending_rewrap(pool, ring(new, old)) == 7
    usage = {u.master_key_id: u for u in await key_rotation.usage(pool)}
    assert (usage["2025"].data_keys, usage["2026"].data_keys) == (7, 1)

    # Step 2: re-wrap, in small batches, with progress.
    seen: list[tuple[int, int]] = []
    report = await key_rotation.rewrap(
        pool, ring(new, old), batch_size=3, progress=lambda d, t: seen.append((d, t))
    )
    assert report.complete and report.rewrapped == 7 and report.master_key_id == "2026"
    assert seen[0] == (0, 7) and seen[-1] == (7, 7) and len(seen) == 4
    again = await key_rotation.rewrap(pool, ring(new, old))
    assert again.complete and again.rewrapped == 0  # idempotent
    assert [(u.master_key_id, u.data_keys, u.orgs) for u in await key_rotation.usage(pool)] == [
        ("2026", 8, 8)
    ]

    # Step 3: the old master key removed; a fresh process decrypts everything,
    # and the old one alone can no longer unwrap anything.
    after = SecretCipher(pool, ring(new))
    for org, ref, value in secrets:
        assert await after.decrypt(org, ref.key_id, ref.ciphertext) == value
    with pytest.raises(MasterKeyUnavailable, match="'2026' is not configured"):
        org, ref, _ = secrets[0]
        await SecretCipher(pool, ring(old)).decrypt(org, ref.key_id, ref.ciphertext)


async def test_rotation_reports_data_keys_whose_master_key_is_missing(pool: asyncpg.Pool) -> None:
    gone, kept, new = master("gone"), master("kept"), master("new")
    for key in (gone, gone, kept):
        await SecretCipher(pool, ring(key)).encrypt(uuid.uuid4(), b"x")
    report = await key_rotation.rewrap(pool, ring(new, kept), batch_size=1)
    assert not report.complete
    assert report.rewrapped == 1 and report.unavailable == {"gone": 2}
    assert {u.master_key_id: u.data_keys for u in await key_rotation.usage(pool)} == {
        "gone": 2,
        "new": 1,
    }


async def test_fresh_data_keys_retire_the_old_ones_which_still_decrypt(
    pool: asyncpg.Pool,
) -> None:
    keys = ring(master("m1"))
    cipher = SecretCipher(pool, keys, current_ttl_s=0.0)
    orgs = [uuid.uuid4() for _ in range(3)]
    old = {org: await cipher.encrypt(org, b"before") for org in orgs}
    steps: list[tuple[int, int]] = []
    assert await key_rotation.new_data_keys(pool, keys, progress=lambda d, t: steps.append((d, t)))
    assert steps[-1] == (3, 3)
    for org in orgs:
        ref = await cipher.encrypt(org, b"after")
        assert ref.key_id != old[org].key_id
        assert await cipher.decrypt(org, old[org].key_id, old[org].ciphertext) == b"before"
        assert await cipher.decrypt(org, ref.key_id, ref.ciphertext) == b"after"
    (usage,) = await key_rotation.usage(pool)
    assert (usage.data_keys, usage.current_data_keys, usage.orgs) == (6, 3, 3)


class CountingMasterKey(MasterKey):
    """Counts wraps: each is one attempt to create a data key."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id, os.urandom(32))
        self.wraps = 0

    def wrap(self, org_id: uuid.UUID, key_id: str, data_key: bytes) -> bytes:
        self.wraps += 1
        return super().wrap(org_id, key_id, data_key)


async def test_concurrent_first_use_makes_exactly_one_current_key_per_org(
    database: str,
) -> None:
    counting = CountingMasterKey("m1")
    keys = ring(counting)
    orgs = [uuid.uuid4() for _ in range(4)]
    # Every connection open before the race, so the first reads really overlap;
    # a cipher per task: as many "processes" as tasks, no shared cache.
    pool = await create_pool(database, min_size=16, max_size=16)
    try:
        ciphers = [SecretCipher(pool, keys) for _ in range(48)]
        refs = await asyncio.gather(
            *(c.encrypt(orgs[i % len(orgs)], f"v{i}".encode()) for i, c in enumerate(ciphers))
        )
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT org_id, count(*) AS n FROM org_data_keys GROUP BY org_id"
            )
        assert {r["org_id"]: r["n"] for r in rows} == {org: 1 for org in orgs}
        assert counting.wraps > len(orgs)  # the race did happen: losers wrapped keys too
        by_org: dict[uuid.UUID, set[str]] = {}
        for i, ref in enumerate(refs):
            org = orgs[i % len(orgs)]
            by_org.setdefault(org, set()).add(ref.key_id)
            assert await ciphers[-1 - i].decrypt(org, ref.key_id, ref.ciphertext) == (
                f"v{i}".encode()
            )
        assert all(len(ids) == 1 for ids in by_org.values())
    finally:
        await pool.close()


def _encodings(secret: bytes) -> list[bytes]:
    b64 = base64.b64encode(secret)
    url = base64.urlsafe_b64encode(secret)
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        b64,
        b64.rstrip(b"="),
        url,
        url.rstrip(b"="),
    ]


async def test_the_table_never_holds_a_data_key_master_key_or_secret_in_plaintext(
    pool: asyncpg.Pool,
) -> None:
    old, new = master("old"), master("new")
    cipher = SecretCipher(pool, ring(old))
    orgs = [uuid.uuid4() for _ in range(5)]
    plaintexts = [f"canary-{uuid.uuid4()}".encode() for _ in orgs]
    for org, value in zip(orgs, plaintexts, strict=True):
        await cipher.encrypt(org, value)
    await key_rotation.rewrap(pool, ring(new, old))
    await key_rotation.new_data_keys(pool, ring(new, old))

    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT key_id, org_id, wrapped_key, master_key_id FROM org_data_keys"
        )
        dump = "\n".join(
            r["t"] for r in await conn.fetch("SELECT t::text AS t FROM org_data_keys t")
        ).encode()
    assert len(rows) == 10
    data_keys = [new.unwrap(r["org_id"], r["key_id"], r["wrapped_key"]) for r in rows]
    assert len(set(data_keys)) == 10 and all(len(k) == 32 for k in data_keys)
    raw = b"\n".join(bytes(r["wrapped_key"]) for r in rows)
    needles = [
        *(e for k in data_keys for e in _encodings(k)),
        *(e for k in (old, new) for e in _encodings(k._material)),
        *plaintexts,
    ]
    for needle in needles:
        assert needle not in dump and needle not in raw


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        check=False,
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_keys_status_and_rotate(
    pool: asyncpg.Pool, database: str, tmp_path: Path
) -> None:
    old, new = master("old"), master("new")
    cipher = SecretCipher(pool, ring(old))
    orgs = [uuid.uuid4() for _ in range(3)]
    refs = [await cipher.encrypt(org, b"v") for org in orgs]

    def keys_var(*keys: MasterKey) -> str:
        return ",".join(f"{k.id}:{base64.b64encode(k._material).decode()}" for k in keys)

    env = {
        "BYTEOR_CLOUD_DATABASE_URL": database,
        "BYTEOR_CLOUD_HOME": str(tmp_path),
        "BYTEOR_CLOUD_MASTER_KEYS": keys_var(new, old),
    }
    for args in (["keys", "--help"], ["keys", "rotate", "--help"], ["keys", "status", "--help"]):
        shown = await asyncio.to_thread(_cli, *args, env=env)
        assert shown.returncode == 0 and "usage: byteor-cloud keys" in shown.stdout

    status = await asyncio.to_thread(_cli, "keys", "status", env=env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split() == ["MASTER", "KEY", "CONFIGURED", "DATA", "KEYS", "CURRENT", "ORGS"]
    assert lines[1].split() == ["new", "current", "0", "0", "0"] or lines[2].split() == [
        "new",
        "current",
        "0",
        "0",
        "0",
    ]
    assert ["old", "yes", "3", "3", "3"] in [ln.split() for ln in lines]
    assert "3 data keys are not under the current master key" in status.stdout

    rotated = await asyncio.to_thread(_cli, "keys", "rotate", "--batch-size", "2", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped: 3 data keys" in rotated.stdout
    assert "3/3 data keys re-wrapped" in rotated.stderr
    again = await asyncio.to_thread(_cli, "keys", "rotate", "--new-data-keys", env=env)
    assert again.returncode == 0, again.stderr
    assert "re-wrapped: 0 data keys" in again.stdout and "fresh data keys: 3" in again.stdout

    only_new = {**env, "BYTEOR_CLOUD_MASTER_KEYS": keys_var(new)}
    status = await asyncio.to_thread(_cli, "keys", "status", env=only_new)
    assert status.returncode == 0, status.stderr
    assert ["new", "current", "6", "3", "3"] in [ln.split() for ln in status.stdout.splitlines()]
    after = SecretCipher(pool, ring(new))
    for org, ref in zip(orgs, refs, strict=True):
        assert await after.decrypt(org, ref.key_id, ref.ciphertext) == b"v"

    # No key material in anything the CLI printed.
    printed = status.stdout + status.stderr + rotated.stdout + rotated.stderr + again.stdout
    for key in (old, new):
        assert base64.b64encode(key._material).decode() not in printed

    # A master key missing for some data keys: reported, exit 2.
    await SecretCipher(pool, ring(master("lost"))).encrypt(uuid.uuid4(), b"x")
    failed = await asyncio.to_thread(_cli, "keys", "rotate", env=only_new)
    assert failed.returncode == 2
    assert "1 data keys under master key 'lost', not configured" in failed.stdout
    assert "rotation incomplete" in failed.stderr
    bad = await asyncio.to_thread(
        _cli, "keys", "status", env={**env, "BYTEOR_CLOUD_MASTER_KEYS": "k:short"}
    )
    assert bad.returncode == 2 and "BYTEOR_CLOUD_MASTER_KEYS: key 'k'" in bad.stderr
