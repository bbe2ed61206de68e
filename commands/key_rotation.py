"""Master key rotation and fresh data keys (``byteor-cloud keys rotate|status``).

Rotating a master key without downtime, as an operator::

    1. configure the new master key first, keep the old ones after it
       (BYTEOR_CLOUD_MASTER_KEYS=new:...,old:...) and restart the processes:
       new data keys are wrapped by ``new``, every key still unwraps;
    2. ``byteor-cloud keys rotate``: re-wraps every data key not yet under the
       current master key, in batches, each batch one short transaction;
    3. when ``keys status`` shows no data key under ``old``, drop it from
       the configuration.

``rewrap`` is idempotent (a second run finds nothing to do) and safe beside
running processes: a row is re-wrapped in place under a row lock and always
holds one complete wrap, and a process that cached the unwrapped data key
keeps using it (the data key itself does not change). ``new_data_keys`` gives
every organization a fresh current data key and retires the old one, which
stays to decrypt what it encrypted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import msgspec
from cryptography.exceptions import InvalidTag

from commands.secret_keys import MasterKeyring, new_data_key, new_data_key_id
from schema.pg import AnyPool

Progress = Callable[[int, int], None]
"""Called with (done, total) after each batch."""


class RewrapReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a re-wrap pass did; ``unavailable`` and ``corrupt`` rows were left as they were."""

    master_key_id: str
    rewrapped: int
    unavailable: dict[str, int]  # master key id not configured -> data keys it wraps
    corrupt: tuple[str, ...]  # key ids whose wrap does not authenticate

    @property
    def complete(self) -> bool:
        return not self.unavailable and not self.corrupt


class MasterKeyUsage(msgspec.Struct, frozen=True, kw_only=True):
    master_key_id: str
    data_keys: int
    current_data_keys: int
    orgs: int


async def pending_rewrap(pool: AnyPool, keyring: MasterKeyring) -> int:
    """Data keys not wrapped by the current master key."""
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM org_data_keys WHERE master_key_id <> $1", keyring.current.id
        )
    return count


async def rewrap(
    pool: AnyPool,
    keyring: MasterKeyring,
    *,
    batch_size: int = 200,
    progress: Progress | None = None,
) -> RewrapReport:
    """Re-wrap every data key under ``keyring.current``; rows it cannot unwrap are reported."""
    current = keyring.current
    total = await pending_rewrap(pool, keyring)
    done = 0
    unavailable: dict[str, int] = {}
    corrupt: list[str] = []
    cursor = ""
    if progress is not None:
        progress(0, total)
    while True:
        async with pool.acquire() as conn, conn.transaction():
            # key_id order with a cursor: rows that cannot be re-wrapped are
            # passed over instead of being fetched again forever.
            rows = await conn.fetch(
                """
                SELECT key_id, org_id, wrapped_key, master_key_id FROM org_data_keys
                WHERE master_key_id <> $1 AND key_id > $2
                ORDER BY key_id LIMIT $3 FOR UPDATE
                """,
                current.id,
                cursor,
                batch_size,
            )
            if not rows:
                break
            cursor = rows[-1]["key_id"]
            updates: list[tuple[str, bytes, str]] = []
            for row in rows:
                old_id: str = row["master_key_id"]
                if old_id not in keyring:
                    unavailable[old_id] = unavailable.get(old_id, 0) + 1
                    continue
                org_id: uuid.UUID = row["org_id"]
                key_id: str = row["key_id"]
                try:
                    material = keyring.get(old_id).unwrap(org_id, key_id, row["wrapped_key"])
                except InvalidTag:
                    corrupt.append(key_id)
                    continue
                updates.append((key_id, current.wrap(org_id, key_id, material), current.id))
            if updates:
                await conn.executemany(
                    """
                    UPDATE org_data_keys
                    SET wrapped_key = $2, master_key_id = $3, rewrapped_at = now()
                    WHERE key_id = $1
                    """,
                    updates,
                )
        done += len(rows)
        if progress is not None:
            progress(min(done, total), max(total, done))
    return RewrapReport(
        master_key_id=current.id,
        rewrapped=done - sum(unavailable.values()) - len(corrupt),
        unavailable=unavailable,
        corrupt=tuple(corrupt),
    )


async def new_data_keys(
    pool: AnyPool, keyring: MasterKeyring, *, progress: Progress | None = None
) -> int:
    """A fresh current data key for every organization that has one; returns how many."""
    async with pool.acquire() as conn:
        orgs = [
            r["org_id"]
            for r in await conn.fetch(
                "SELECT org_id FROM org_data_keys WHERE retired_at IS NULL ORDER BY org_id"
            )
        ]
    master = keyring.current
    if progress is not None:
        progress(0, len(orgs))
    for done, org_id in enumerate(orgs, start=1):
        key_id = new_data_key_id()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE org_data_keys SET retired_at = now() "
                "WHERE org_id = $1 AND retired_at IS NULL",
                org_id,
            )
            await conn.execute(
                "INSERT INTO org_data_keys (key_id, org_id, wrapped_key, master_key_id) "
                "VALUES ($1, $2, $3, $4)",
                key_id,
                org_id,
                master.wrap(org_id, key_id, new_data_key()),
                master.id,
            )
        if progress is not None:
            progress(done, len(orgs))
    return len(orgs)


async def usage(pool: AnyPool) -> list[MasterKeyUsage]:
    """Data keys per master key id (counts only)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT master_key_id, count(*) AS data_keys,
                   count(*) FILTER (WHERE retired_at IS NULL) AS current_data_keys,
                   count(DISTINCT org_id) AS orgs
            FROM org_data_keys GROUP BY master_key_id ORDER BY master_key_id
            """
        )
    return [
        MasterKeyUsage(
            master_key_id=r["master_key_id"],
            data_keys=r["data_keys"],
            current_data_keys=r["current_data_keys"],
            orgs=r["orgs"],
        )
        for r in rows
    ]


__all__ = [
    "MasterKeyUsage",
    "RewrapReport",
    "new_data_keys",
    "pending_rewrap",
    "rewrap",
    "usage",
]
