"""Object storage for deploy bundles (S3 API through aioboto3; SeaweedFS locally).

It lives on the write side, not in ``workers/``, because both the build job
(which may import ``commands``) and the agent bundle route (which may not
import ``workers``) need it.

Keys are content addresses: ``bundles/<org>/<sha256 hex>.tar.gz``. A put is
idempotent: an object already under its key is the same bytes (the key is
their digest), so a retried build uploads nothing new; a lost race between two
writers stores identical bytes twice, which is harmless. Objects are never
overwritten with other content and never deleted here.

Errors (all ``ObjectStoreError``; botocore's never cross this module)::

    ObjectStoreError
     +-- ObjectMissing            no object under the key (a route answers 404)
     +-- ObjectStoreUnavailable   connection failure, timeout, throttling or 5xx: retry later
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

import aioboto3
import aiohttp
import msgspec
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

BUNDLE_PREFIX: Final = "bundles"
CHUNK_BYTES: Final = 64 * 1024
_MISSING_CODES: Final = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
_BUNDLE_KEY = re.compile(r"bundles/[0-9a-f-]{36}/[0-9a-f]{64}\.tar\.gz")


class ObjectStoreError(Exception):
    """An object store call failed; ``str()`` names the key, never credentials."""


class ObjectMissing(ObjectStoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no object {key!r}")
        self.key = key


class ObjectStoreUnavailable(ObjectStoreError):
    pass


class ObjectInfo(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    size: int
    digest: str | None  # "sha256:<hex>" as recorded at upload, when recorded


class StoredObject(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    digest: str
    size: int
    created: bool  # False when the object was there already


def bundle_key(org_id: uuid.UUID, digest: str) -> str:
    """The content address of a bundle whose digest is ``sha256:<hex>``."""
    hex_digest = digest.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", hex_digest):
        raise ValueError("a bundle digest is sha256:<64 hex>")
    return f"{BUNDLE_PREFIX}/{org_id}/{hex_digest}.tar.gz"


def is_bundle_key(key: str) -> bool:
    return _BUNDLE_KEY.fullmatch(key) is not None


class ObjectStore:
    """One S3 client for the process; ``start`` opens it and ensures the bucket."""

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        access_key: str | None,
        secret_key: str | None,
        bucket: str,
        region: str = "us-east-1",
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 2,
    ) -> None:
        self.bucket = bucket
        self._client_kwargs: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "region_name": region,
            "config": Config(
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                # Path-style: SeaweedFS and most self-hosted S3 have no per-bucket DNS.
                s3={"addressing_style": "path"},
            ),
        }
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    def __repr__(self) -> str:
        return (
            f"ObjectStore(endpoint={self._client_kwargs['endpoint_url']!r}, bucket={self.bucket!r})"
        )

    async def start(self) -> None:
        if self._client is not None:
            return
        session = aioboto3.Session()
        self._client = await self._stack.enter_async_context(
            session.client("s3", **self._client_kwargs)
        )
        try:
            await self.ensure_bucket()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    async def __aenter__(self) -> ObjectStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("ObjectStore.start() was not called")
        return self._client

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (several processes may race: all succeed)."""
        async with _mapped(self.bucket):
            try:
                await self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _code(exc) not in _MISSING_CODES:
                    raise
            try:
                await self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def put_bundle(self, org_id: uuid.UUID, data: bytes) -> StoredObject:
        """Store ``data`` under its content address (idempotent)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        key = bundle_key(org_id, digest)
        existing = await self.head(key)
        if existing is not None and existing.size == len(data):
            return StoredObject(key=key, digest=digest, size=len(data), created=False)
        async with _mapped(key):
            await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="application/gzip",
                Metadata={"sha256": digest.removeprefix("sha256:")},
            )
        return StoredObject(key=key, digest=digest, size=len(data), created=True)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            async with _mapped(key):
                response = await self.client.head_object(Bucket=self.bucket, Key=key)
        except ObjectMissing:
            return None
        recorded = (response.get("Metadata") or {}).get("sha256")
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            digest=None if recorded is None else f"sha256:{recorded}",
        )

    async def exists(self, key: str) -> bool:
        return await self.head(key) is not None

    async def stream(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of at most ``chunk_bytes``, never all in memory.

        ``ObjectMissing`` is raised by the first iteration, before any chunk, so a
        route can prime the iterator and still answer 404.
        """
        async with _mapped(key):
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
        body = response["Body"]
        try:
            while True:
                async with _mapped(key):
                    chunk = await body.read(chunk_bytes)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def read(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.stream(key)])


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.asynccontextmanager
async def _mapped(key: str) -> AsyncIterator[None]:
    """botocore's exceptions as ours: missing, unavailable (retry) or other."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _MISSING_CODES or status == 404:
            raise ObjectMissing(key) from None
        if status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout"):
            raise ObjectStoreUnavailable(
                f"object store unavailable ({code or status}) for {key!r}"
            ) from None
        raise ObjectStoreError(f"object store refused {key!r}: {code or status}") from None
    except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
        # Connection refused/reset, DNS, timeouts (aiohttp's errors are OSErrors or
        # wrapped by botocore): nothing was decided, so a retry may succeed.
        raise ObjectStoreUnavailable(
            f"object store unreachable for {key!r}: {type(exc).__name__}"
        ) from None
