"""The deploy bundle's manifest and the checks an agent runs on a bundle offline (DOMAIN.md §5).

A deploy bundle is a deterministic ``.tar.gz`` of these files (``FILES``)::

    adapters.json        adapters with secretRefs replaced by names into secrets.json.enc,
                         and the bundle's parameters
    approval.cred        the approval credential (only when ``approval_required``)
    manifest.json        ids, posture, spec_hash, capabilities, kid, each other file's sha256
    manifest.sig         raw Ed25519 signature of manifest.json's exact bytes by ``kid``
    runtime_config.txt   ``domain.tuning.runtime_config_text``
    secrets.json.enc     AES-256-GCM of the materialized secrets under a per-bundle key
    signing_keys.json    the organization's key set when the bundle was built
    spec.kv              the version's canonical spec (its SHA-256 is ``spec_hash``)

Packing, signing and encryption happen outside ``domain/`` (``workers/bundle_tar.py``);
this module fixes the manifest's bytes and the verification rules, which the
build (as a self-check) and every agent share. ``check_bundle`` rejects with
``BundleRejected`` carrying one of ``REJECTION_CODES``, in this order:

============================  ==========================================================
bundle_malformed              not a gzip tarball of regular files with unique, known names
                              (raised by the unpacker)
bundle_file_missing           ``manifest.json``/``manifest.sig``, a file the manifest
                              lists, or ``approval.cred`` when the manifest requires it
bundle_unknown_key            the manifest's ``kid`` is not in the verifier's key set
bundle_bad_signature          ``manifest.sig`` does not verify over ``manifest.json``
bundle_manifest_invalid       the (authentic) manifest is not a version-1 manifest, or
                              omits one of the required files
bundle_file_unexpected        a file in the tarball that the manifest does not list
bundle_digest_mismatch        a file's sha256 is not the manifest's
bundle_spec_hash_mismatch     ``spec.kv`` does not hash to the manifest's ``spec_hash``
bundle_wrong_target           the manifest names another org/project/environment/deployment
                              than the agent expects
============================  ==========================================================

then the approval credential through ``domain.credential.check_coverage``
(``CoverageRejected`` with its own seven codes) against the manifest's
org, project, environment, posture, ``spec_hash`` and capabilities.

The signature comes first so that nothing an attacker wrote is interpreted
before it is authenticated, except the ``kid`` needed to pick the key.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Final, Literal, NoReturn

import msgspec

from domain.credential import Coverage, CredentialClaims, SigningKey, Verify, check_coverage
from domain.environment import Posture
from domain.errors import InvalidInput

MANIFEST_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
SIGNATURE: Final = "manifest.sig"
SPEC: Final = "spec.kv"
RUNTIME_CONFIG: Final = "runtime_config.txt"
ADAPTERS: Final = "adapters.json"
SECRETS: Final = "secrets.json.enc"
APPROVAL: Final = "approval.cred"
SIGNING_KEYS: Final = "signing_keys.json"
FILES: Final = (
    ADAPTERS,
    APPROVAL,
    MANIFEST,
    SIGNATURE,
    RUNTIME_CONFIG,
    SECRETS,
    SIGNING_KEYS,
    SPEC,
)
# Listed (with digests) by every manifest; approval.cred only when governed.
REQUIRED_LISTED: Final = (ADAPTERS, RUNTIME_CONFIG, SECRETS, SIGNING_KEYS, SPEC)
SECRETS_ALG: Final = "A256GCM"

REJECTION_CODES: Final = (
    "bundle_malformed",
    "bundle_file_missing",
    "bundle_unknown_key",
    "bundle_bad_signature",
    "bundle_manifest_invalid",
    "bundle_file_unexpected",
    "bundle_digest_mismatch",
    "bundle_spec_hash_mismatch",
    "bundle_wrong_target",
)


class BundleRejected(InvalidInput):
    """A deploy bundle failed verification; ``code`` is one of ``REJECTION_CODES``."""

    code = "bundle_rejected"


def reject(code: str, detail: str, **context: object) -> NoReturn:
    raise BundleRejected(detail, code=code, context=context)


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """``manifest.json``: what the bundle is for and the digest of every other file."""

    v: int = MANIFEST_VERSION
    kid: str
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    environment_posture: Posture
    deployment_id: uuid.UUID
    config_bundle_id: uuid.UUID
    version_id: uuid.UUID
    spec_hash: str
    capabilities: list[str]
    approval_required: bool
    secrets_alg: Literal["A256GCM"] = SECRETS_ALG
    files: dict[str, str]  # name -> "sha256:<hex>"


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(manifest: Manifest) -> bytes:
    """The exact bytes that are signed: canonical JSON (sorted keys, compact, UTF-8)."""
    return msgspec.json.encode(msgspec.to_builtins(manifest), order="sorted")


class SecretValues:
    """Materialized secret plaintext by location (``adapters/<name>/secretRefs/<field>``).

    Not a msgspec type and redacted in ``repr``, so it cannot reach an event,
    a log line or a response by accident; ``reveal`` is for the encryption step.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(sorted(values.items()))

    def reveal(self) -> dict[str, str]:
        return dict(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, where: object) -> bool:
        return where in self._values

    def __repr__(self) -> str:
        return f"SecretValues(<{len(self._values)} redacted>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValues) and other._values == self._values

    def __hash__(self) -> int:
        return hash(tuple(self._values))


def secret_location(adapter: str, field: str) -> str:
    """Where a secret sits; also the context its inline ciphertext was sealed with (0010)."""
    return f"adapters/{adapter}/secretRefs/{field}"


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """What the verifying agent knows it should run (each ``None`` is not checked)."""

    org_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    environment_id: uuid.UUID | None = None
    deployment_id: uuid.UUID | None = None


def check_bundle(
    files: Mapping[str, bytes],
    *,
    keys: Mapping[str, SigningKey],
    verify: Verify,
    now: datetime,
    target: Target | None = None,
) -> tuple[Manifest, CredentialClaims | None]:
    """The authentic manifest (and the approval's claims when governed); module docstring."""
    for name in (MANIFEST, SIGNATURE):
        if name not in files:
            reject("bundle_file_missing", f"the bundle has no {name}", file=name)
    raw = files[MANIFEST]
    kid = _kid_of(raw)
    key = keys.get(kid)
    if key is None:
        reject("bundle_unknown_key", "the manifest's signing key is unknown", kid=kid)
    if not verify(key.public_key, raw, files[SIGNATURE]):
        reject("bundle_bad_signature", "the manifest signature does not verify", kid=kid)
    manifest = _decode_manifest(raw)
    listed = set(manifest.files)
    for name in (*REQUIRED_LISTED, *((APPROVAL,) if manifest.approval_required else ())):
        if name not in listed:
            reject("bundle_manifest_invalid", f"the manifest does not list {name}", file=name)
    for name in sorted(listed):
        if name not in files:
            reject("bundle_file_missing", f"the bundle has no {name}", file=name)
    for name in sorted(files):
        if name not in listed and name not in (MANIFEST, SIGNATURE):
            reject("bundle_file_unexpected", f"{name} is not in the manifest", file=name)
    for name in sorted(listed):
        if sha256_of(files[name]) != manifest.files[name]:
            reject("bundle_digest_mismatch", f"{name} does not match its digest", file=name)
    if sha256_of(files[SPEC]) != manifest.spec_hash:
        reject("bundle_spec_hash_mismatch", "spec.kv does not hash to spec_hash")
    if target is not None:
        _check_target(manifest, target)
    if not manifest.approval_required:
        return manifest, None
    claims = check_coverage(
        _credential_text(files[APPROVAL]),
        keys=keys,
        verify=verify,
        required=Coverage(
            org_id=manifest.org_id,
            project_id=manifest.project_id,
            environment_id=manifest.environment_id,
            environment_posture=manifest.environment_posture,
            spec_hash=manifest.spec_hash,
            capabilities=tuple(manifest.capabilities),
        ),
        now=now,
    )
    return manifest, claims


class _KidOnly(msgspec.Struct, frozen=True):
    kid: str


def _kid_of(raw: bytes) -> str:
    try:
        return msgspec.json.decode(raw, type=_KidOnly).kid
    except msgspec.DecodeError:
        # An unauthenticated manifest cannot be trusted to say why it is broken.
        reject("bundle_bad_signature", "the manifest has no readable kid")


def _decode_manifest(raw: bytes) -> Manifest:
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.DecodeError as exc:
        reject("bundle_manifest_invalid", f"not a manifest: {exc}")
    if manifest.v != MANIFEST_VERSION:
        reject("bundle_manifest_invalid", "unsupported manifest version", v=manifest.v)
    return manifest


def _check_target(manifest: Manifest, target: Target) -> None:
    for field in ("org_id", "project_id", "environment_id", "deployment_id"):
        expected = getattr(target, field)
        if expected is not None and getattr(manifest, field) != expected:
            reject(
                "bundle_wrong_target",
                f"the bundle is for another {field.removesuffix('_id')}",
                field=field,
                expected=str(expected),
                found=str(getattr(manifest, field)),
            )


def _credential_text(raw: bytes) -> str:
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        # check_coverage names this approval_bad_signature; feed it something it rejects so.
        return "."
