"""Resolving ``vault`` secretRefs (KV v2, hvac) while a deploy bundle is built.

Fail closed (ARCHITECTURE.md "Secrets"): a bundle that needs a Vault secret is
never built without it. The build job turns these errors into job outcomes::

    VaultNotConfigured   Permanent  the bundle has vault refs, the process has no
                                    VAULT_ADDR/VAULT_TOKEN
    VaultSecretMissing   Permanent  no secret at mount/path (or that version is
                                    deleted/destroyed), or it lacks the field
    VaultRefused         Permanent  401/403/400: the token may not read it
    VaultUnavailable     Retryable  connection refused, timeout, 429, 5xx, sealed

Messages name the mount, path, field and version, never a value, and not
Vault's own error text (which may echo request details). hvac is blocking
(requests), so every call runs in a worker thread; each distinct
(mount, path, version) is read once however many fields come from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, Final

import hvac
import hvac.exceptions
import msgspec
import requests

from domain.adapters import VaultRef
from workers.errors import Permanent, Retryable

DEFAULT_TIMEOUT_S: Final = 5.0
MAX_PARALLEL_READS: Final = 8


class VaultNotConfigured(Permanent):
    def __init__(self) -> None:
        super().__init__(
            "the bundle has vault secretRefs but Vault is not configured "
            "(set VAULT_ADDR and VAULT_TOKEN); refusing to build without them"
        )


def describe(ref: VaultRef) -> str:
    version = "latest" if ref.version is None else f"version {ref.version}"
    return f"vault {ref.mount}/{ref.path} field {ref.field!r} ({version})"


class VaultSecretMissing(Permanent):
    def __init__(self, ref: VaultRef, why: str) -> None:
        super().__init__(f"{describe(ref)}: {why}")
        self.ref = ref


class VaultRefused(Permanent):
    def __init__(self, ref: VaultRef, status: str) -> None:
        super().__init__(f"{describe(ref)}: Vault refused the read ({status})")
        self.ref = ref


class VaultUnavailable(Retryable):
    def __init__(self, ref: VaultRef, why: str) -> None:
        super().__init__(f"{describe(ref)}: Vault unavailable ({why})")
        self.ref = ref


_SecretKey = tuple[str, str, int | None]


class VaultResolver:
    """Reads KV v2 secrets with one token; ``repr`` never shows the token."""

    def __init__(self, addr: str, token: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.addr = addr
        self._client = hvac.Client(url=addr, token=token, timeout=timeout_s)

    def __repr__(self) -> str:
        return f"VaultResolver(addr={self.addr!r})"

    @classmethod
    def configured(cls, addr: str | None, token: str | None) -> VaultResolver | None:
        """A resolver when both settings are present, else None (the build fails closed)."""
        if not addr or not token:
            return None
        return cls(addr, token)

    async def resolve(self, refs: Iterable[VaultRef]) -> dict[VaultRef, str]:
        """Each ref's value as text (non-string JSON values as compact JSON)."""
        wanted = list(dict.fromkeys(refs))
        by_secret: dict[_SecretKey, list[VaultRef]] = {}
        for ref in wanted:
            by_secret.setdefault((ref.mount, ref.path, ref.version), []).append(ref)
        gate = asyncio.Semaphore(MAX_PARALLEL_READS)

        async def read(first: VaultRef) -> Mapping[str, Any]:
            async with gate:
                return await asyncio.to_thread(self._read, first)

        secrets = await asyncio.gather(*(read(group[0]) for group in by_secret.values()))
        values: dict[VaultRef, str] = {}
        for group, data in zip(by_secret.values(), secrets, strict=True):
            for ref in group:
                if ref.field not in data:
                    raise VaultSecretMissing(ref, "the secret has no such field")
                value = data[ref.field]
                values[ref] = (
                    value if isinstance(value, str) else msgspec.json.encode(value).decode()
                )
        return values

    def _read(self, ref: VaultRef) -> Mapping[str, Any]:
        try:
            response = self._client.secrets.kv.v2.read_secret_version(
                path=ref.path,
                version=ref.version,
                mount_point=ref.mount,
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath:
            raise VaultSecretMissing(ref, "no such secret or version (or it was deleted)") from None
        except (hvac.exceptions.Unauthorized, hvac.exceptions.Forbidden) as exc:
            raise VaultRefused(ref, type(exc).__name__) from None
        except hvac.exceptions.InvalidRequest:
            raise VaultRefused(ref, "InvalidRequest") from None
        except (
            hvac.exceptions.InternalServerError,
            hvac.exceptions.BadGateway,
            hvac.exceptions.VaultDown,
            hvac.exceptions.VaultNotInitialized,
            hvac.exceptions.RateLimitExceeded,
            hvac.exceptions.UnexpectedError,
        ) as exc:
            raise VaultUnavailable(ref, type(exc).__name__) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise VaultUnavailable(ref, type(exc).__name__) from None
        data = ((response or {}).get("data") or {}).get("data")
        if not isinstance(data, dict):
            raise VaultSecretMissing(ref, "the version holds no data (deleted or destroyed)")
        return data
