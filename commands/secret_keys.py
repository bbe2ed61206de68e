"""Envelope encryption of inline secrets (ARCHITECTURE.md "Secrets").

Two layers of AES-256-GCM keys::

    master key   configuration only (BYTEOR_CLOUD_MASTER_KEYS, ops/master_keys.py),
                 an id and 256 bits; the first configured key is the current one
        | wraps
    data key     one current per organization (table org_data_keys, migration 0017),
                 256 random bits, stored only wrapped, named by its key id
        | encrypts
    inline secret  InlineRef(key_id, ciphertext) in events

Every AES-GCM call takes a fresh random 96-bit nonce and associated data that
binds the result to where it belongs: a wrapped data key to its organization
and key id, a ciphertext to its organization, key id and context (for bundles,
``adapters/<name>/secretRefs/<field>``). A ciphertext copied into another
organization, under another key id or into another field fails to decrypt.

Data keys are created on an organization's first encryption; concurrent first
uses (any number of processes) race on a unique index and all adopt the
winner. Unwrapped keys are cached in process memory (bounded LRU); they are
never logged, stored or returned. Re-wrapping under a new master key and fresh
data keys live in ``commands/key_rotation.py``.

Exceptions (all ``SecretKeyError``)::

    SecretKeyError
     +-- MasterKeyUnavailable  the data key is wrapped by a master key not configured
     +-- UnknownDataKey        no data key with this id in this organization
     +-- DecryptionFailed      authentication failed (tampered, moved or wrong key)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.adapters import Encrypt, InlineRef
from schema.pg import AnyPool, Connection

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
CIPHERTEXT_VERSION: Final = 1
DATA_KEY_PREFIX: Final = "dk_"
_WRAP_PURPOSE: Final = "byteor-cloud/data-key/v1"
_SECRET_PURPOSE: Final = "byteor-cloud/inline-secret/v1"


class SecretKeyError(Exception):
    """A secret could not be encrypted or decrypted; ``str()`` says why, without key material."""


class MasterKeyUnavailable(SecretKeyError):
    def __init__(self, master_key_id: str) -> None:
        super().__init__(f"master key {master_key_id!r} is not configured")
        self.master_key_id = master_key_id


class UnknownDataKey(SecretKeyError):
    def __init__(self, org_id: uuid.UUID, key_id: str) -> None:
        super().__init__(f"organization {org_id} has no data key {key_id!r}")
        self.org_id = org_id
        self.key_id = key_id


class DecryptionFailed(SecretKeyError):
    def __init__(self, org_id: uuid.UUID, key_id: str, what: str) -> None:
        super().__init__(
            f"{what} does not authenticate under data key {key_id!r} of organization {org_id} "
            "(tampered, or moved from another organization, key or field)"
        )
        self.org_id = org_id
        self.key_id = key_id


def _aad(*parts: str) -> bytes:
    # A JSON array, so no choice of key id or context can make two different
    # bindings encode to the same bytes.
    return msgspec.json.encode(parts)


def _seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def _open(aead: AESGCM, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + 16:
        raise InvalidTag
    return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)


# --- master keys --------------------------------------------------------------------


class MasterKey:
    """A configured key-encryption key: an id and 256 bits (never shown by ``repr``)."""

    __slots__ = ("_aead", "_material", "id")

    def __init__(self, key_id: str, material: bytes) -> None:
        if len(material) != KEY_BYTES:
            raise ValueError(f"a master key is {KEY_BYTES} bytes, got {len(material)}")
        self.id = key_id
        self._material = bytes(material)
        self._aead = AESGCM(self._material)

    def wrap(self, org_id: uuid.UUID, key_id: str, data_key: bytes) -> bytes:
        return _seal(self._aead, data_key, _aad(_WRAP_PURPOSE, str(org_id), key_id))

    def unwrap(self, org_id: uuid.UUID, key_id: str, wrapped: bytes) -> bytes:
        """The data key; ``InvalidTag`` if ``wrapped`` is not this key's wrap of that id."""
        return _open(self._aead, wrapped, _aad(_WRAP_PURPOSE, str(org_id), key_id))

    def __repr__(self) -> str:
        return f"MasterKey(id={self.id!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MasterKey)
            and other.id == self.id
            and hmac.compare_digest(other._material, self._material)
        )

    def __hash__(self) -> int:
        return hash(self.id)


class MasterKeyring:
    """The configured master keys; the first wraps new data keys, all unwrap."""

    __slots__ = ("_by_id", "current")

    def __init__(self, keys: Sequence[MasterKey]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one master key")
        self._by_id = {k.id: k for k in keys}
        if len(self._by_id) != len(keys):
            raise ValueError("master key ids must be unique")
        self.current = keys[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def get(self, master_key_id: str) -> MasterKey:
        try:
            return self._by_id[master_key_id]
        except KeyError:
            raise MasterKeyUnavailable(master_key_id) from None

    def __contains__(self, master_key_id: object) -> bool:
        return master_key_id in self._by_id

    def __repr__(self) -> str:
        return f"MasterKeyring(current={self.current.id!r}, ids={self.ids!r})"


def new_data_key_id() -> str:
    return DATA_KEY_PREFIX + uuid.uuid4().hex


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


# --- data keys and inline secrets ---------------------------------------------------


class DataKey:
    """An unwrapped data key of one organization (process memory only)."""

    __slots__ = ("_aead", "id", "org_id")

    def __init__(self, org_id: uuid.UUID, key_id: str, material: bytes) -> None:
        self.org_id = org_id
        self.id = key_id
        self._aead = AESGCM(material)

    def encrypt(self, plaintext: bytes, context: str = "") -> InlineRef:
        aad = _aad(_SECRET_PURPOSE, str(self.org_id), self.id, context)
        blob = bytes([CIPHERTEXT_VERSION]) + _seal(self._aead, plaintext, aad)
        return InlineRef(key_id=self.id, ciphertext=_b64encode(blob))

    def decrypt(self, ciphertext: str, context: str = "") -> bytes:
        failed = DecryptionFailed(self.org_id, self.id, "the ciphertext")
        try:
            blob = _b64decode(ciphertext)
        except ValueError:
            raise failed from None
        if not blob or blob[0] != CIPHERTEXT_VERSION:
            raise failed
        aad = _aad(_SECRET_PURPOSE, str(self.org_id), self.id, context)
        try:
            return _open(self._aead, blob[1:], aad)
        except InvalidTag:
            raise failed from None

    def __repr__(self) -> str:
        return f"DataKey(org_id={self.org_id}, id={self.id!r})"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


class SecretCipher:
    """Encrypts and decrypts organizations' inline secrets with their data keys.

    ``encrypt(org_id, plaintext, context)`` uses the organization's current data
    key (made on first use); ``decrypt`` takes the key id the ciphertext names,
    current or retired. The current key id is re-read after ``current_ttl_s`` so
    that a fresh data key made by ``byteor-cloud keys rotate --new-data-keys`` in
    another process is picked up without a restart.
    """

    def __init__(
        self,
        pool: AnyPool,
        keyring: MasterKeyring,
        *,
        cache_size: int = 1024,
        current_ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._cache_size = max(1, cache_size)
        self._current_ttl_s = current_ttl_s
        self._clock = clock
        self._keys: OrderedDict[tuple[uuid.UUID, str], DataKey] = OrderedDict()
        self._current: OrderedDict[uuid.UUID, tuple[str, float]] = OrderedDict()

    async def encrypt(self, org_id: uuid.UUID, plaintext: bytes, context: str = "") -> InlineRef:
        """``InlineRef(key_id, ciphertext)`` of ``plaintext`` under the org's current key."""
        return (await self.current_key(org_id)).encrypt(plaintext, context)

    async def sealer(self, org_id: uuid.UUID) -> Encrypt:
        """The synchronous ``encrypt`` that ``domain.config_bundle.seal`` takes, bound to
        the org's current key (fetched now, so sealing needs no I/O)."""
        key = await self.current_key(org_id)
        return key.encrypt

    async def decrypt(
        self, org_id: uuid.UUID, key_id: str, ciphertext: str, context: str = ""
    ) -> bytes:
        return (await self.data_key(org_id, key_id)).decrypt(ciphertext, context)

    async def current_key(self, org_id: uuid.UUID) -> DataKey:
        cached = self._current.get(org_id)
        if cached is not None and self._clock() - cached[1] < self._current_ttl_s:
            key = self._cached(org_id, cached[0])
            if key is not None:
                return key
        async with self._pool.acquire() as conn:
            key = await self._current_from(conn, org_id)
        self._current[org_id] = (key.id, self._clock())
        self._current.move_to_end(org_id)
        while len(self._current) > self._cache_size:
            self._current.popitem(last=False)
        return key

    async def data_key(self, org_id: uuid.UUID, key_id: str) -> DataKey:
        key = self._cached(org_id, key_id)
        if key is not None:
            return key
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT wrapped_key, master_key_id FROM org_data_keys "
                "WHERE key_id = $1 AND org_id = $2",
                key_id,
                org_id,
            )
        if row is None:
            raise UnknownDataKey(org_id, key_id)
        return self._unwrap(org_id, key_id, row["wrapped_key"], row["master_key_id"])

    async def _current_from(self, conn: Connection, org_id: uuid.UUID) -> DataKey:
        # Read, else insert; ON CONFLICT DO NOTHING waits for a concurrent
        # inserter to commit and then inserts nothing, so the next read (a new
        # statement, a new snapshot under READ COMMITTED) sees the winner. A
        # third round only happens when a rotation retired the key in between.
        for _ in range(3):
            row = await conn.fetchrow(
                "SELECT key_id, wrapped_key, master_key_id FROM org_data_keys "
                "WHERE org_id = $1 AND retired_at IS NULL",
                org_id,
            )
            if row is None:
                key_id = new_data_key_id()
                master = self._keyring.current
                row = await conn.fetchrow(
                    """
                    INSERT INTO org_data_keys (key_id, org_id, wrapped_key, master_key_id)
                    VALUES ($1, $2, $3, $4)
                    ON CONFLICT (org_id) WHERE retired_at IS NULL DO NOTHING
                    RETURNING key_id, wrapped_key, master_key_id
                    """,
                    key_id,
                    org_id,
                    master.wrap(org_id, key_id, new_data_key()),
                    master.id,
                )
            if row is not None:
                return self._unwrap(org_id, row["key_id"], row["wrapped_key"], row["master_key_id"])
        raise SecretKeyError(f"organization {org_id}: no current data key after three attempts")

    def _cached(self, org_id: uuid.UUID, key_id: str) -> DataKey | None:
        key = self._keys.get((org_id, key_id))
        if key is not None:
            self._keys.move_to_end((org_id, key_id))
        return key

    def _unwrap(
        self, org_id: uuid.UUID, key_id: str, wrapped: bytes, master_key_id: str
    ) -> DataKey:
        master = self._keyring.get(master_key_id)
        try:
            material = master.unwrap(org_id, key_id, wrapped)
        except InvalidTag:
            raise DecryptionFailed(org_id, key_id, "the wrapped data key") from None
        key = DataKey(org_id, key_id, material)
        self._keys[(org_id, key_id)] = key
        self._keys.move_to_end((org_id, key_id))
        while len(self._keys) > self._cache_size:
            self._keys.popitem(last=False)
        return key


__all__ = [
    "DataKey",
    "DecryptionFailed",
    "MasterKey",
    "MasterKeyUnavailable",
    "MasterKeyring",
    "SecretCipher",
    "SecretKeyError",
    "UnknownDataKey",
    "new_data_key",
    "new_data_key_id",
]
