"""Materializing a config bundle's secrets for one deploy bundle, and sealing its key.

This is the only place secret plaintext exists on the cloud side (ARCHITECTURE.md
"Secrets"): inline refs are decrypted with the organization's data key
(``SecretCipher``, with the context each was sealed with, decision 0010),
vault refs are read from Vault; the result is a ``SecretValues`` that only
``workers.bundle_tar.seal_secrets`` reveals, to encrypt it into
``secrets.json.enc``.

The per-bundle secrets key must outlive the build: agents receive it from the
bundle route. It is stored like any inline secret, sealed under the
organization's data key with the context ``deploy_bundles/<deployment>/secrets_key``
(``seal_bundle_key``/``open_bundle_key``), so an event may hold the resulting
``InlineRef`` and a key copied to another deployment does not decrypt.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from commands.secret_keys import SecretCipher, SecretKeyError
from domain.adapters import Adapter, InlineRef, VaultRef
from domain.bundle import SecretValues, secret_location
from workers.errors import Permanent
from workers.vault_refs import VaultNotConfigured, VaultResolver


class InlineSecretUnreadable(Permanent):
    """An inline ciphertext cannot be decrypted (tampered, or its key is gone)."""

    def __init__(self, where: str, why: SecretKeyError) -> None:
        super().__init__(f"inline secret {where} cannot be decrypted: {type(why).__name__}")
        self.where = where


async def materialize(
    adapters: Sequence[Adapter],
    *,
    org_id: uuid.UUID,
    cipher: SecretCipher,
    vault: VaultResolver | None,
) -> SecretValues:
    """Every secretRef's plaintext by location; raises ``Permanent``/``Retryable`` subclasses."""
    inline: dict[str, InlineRef] = {}
    vault_refs: dict[str, VaultRef] = {}
    for adapter in adapters:
        for field, ref in adapter.secret_refs.items():
            where = secret_location(adapter.name, field)
            if isinstance(ref, InlineRef):
                inline[where] = ref
            else:
                vault_refs[where] = ref
    # Vault first: an unconfigured or unreachable Vault should fail the attempt
    # before any inline plaintext is decrypted into memory.
    resolved: dict[VaultRef, str] = {}
    if vault_refs:
        if vault is None:
            raise VaultNotConfigured()
        resolved = await vault.resolve(vault_refs.values())
    values = {where: resolved[ref] for where, ref in vault_refs.items()}
    for where, ref in inline.items():
        try:
            plain = await cipher.decrypt(org_id, ref.key_id, ref.ciphertext, where)
        except SecretKeyError as exc:
            raise InlineSecretUnreadable(where, exc) from None
        values[where] = plain.decode("utf-8")
    return SecretValues(values)


def bundle_key_context(deployment_id: uuid.UUID) -> str:
    return f"deploy_bundles/{deployment_id}/secrets_key"


async def seal_bundle_key(
    cipher: SecretCipher, *, org_id: uuid.UUID, deployment_id: uuid.UUID, key: bytes
) -> InlineRef:
    return await cipher.encrypt(org_id, key, bundle_key_context(deployment_id))


async def open_bundle_key(
    cipher: SecretCipher, *, org_id: uuid.UUID, deployment_id: uuid.UUID, sealed: InlineRef
) -> bytes:
    return await cipher.decrypt(
        org_id, sealed.key_id, sealed.ciphertext, bundle_key_context(deployment_id)
    )
