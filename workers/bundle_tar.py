"""Building and verifying deploy bundles: the tarball, its signature, its encrypted secrets.

The layout and the verification rules are ``domain.bundle``'s; this module
adds the bytes (tar, gzip), Ed25519 (``cryptography``) and AES-256-GCM.
docs/decisions/0011-deploy-bundle-format.md records the choices.

Determinism: the same ``BundleInputs``, secrets, signing key and secrets key
give the same bytes. Entries are sorted by name; every header has mtime 0,
uid/gid 0, empty owner names, mode 0644, USTAR format; gzip has mtime 0, no
file name and a fixed level. Ed25519 signatures are deterministic, and the
secrets file's nonce is derived from its key and plaintext (SIV-style), so a
retried build with the same per-bundle key yields the same content address.

``verify_bundle`` is what an agent runs offline: unpack (refusing anything
but regular files with the layout's names), ``domain.bundle.check_bundle``,
then decrypt ``secrets.json.enc`` with the key the bundle route delivered.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import os
import tarfile
import uuid
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, Protocol

import msgspec
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain import bundle as layout
from domain.adapters import Adapter, InlineRef
from domain.bundle import BundleRejected, Manifest, SecretValues, Target, reject, sha256_of
from domain.credential import CredentialClaims, SigningKey
from domain.environment import Posture
from domain.tuning import Tuning, runtime_config_text

SECRETS_KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
SECRETS_FORMAT: Final = 1
GZIP_LEVEL: Final = 6
MAX_BUNDLE_BYTES: Final = 64 * 1024 * 1024
MAX_FILE_BYTES: Final = 32 * 1024 * 1024
_SECRETS_PURPOSE: Final = "byteor-cloud/bundle-secrets/v1"
_NONCE_PURPOSE: Final = b"byteor-cloud/bundle-secrets/nonce/v1"


# --- signing ------------------------------------------------------------------------


class Signer(Protocol):
    """Signs manifests: an Ed25519 key named ``kid`` (``Ed25519Signer``, or ``SignWith``
    around ``commands.signing_keys.active_signer``'s ``(kid, sign)``)."""

    @property
    def kid(self) -> str: ...

    def sign(self, payload: bytes) -> bytes: ...


class SignWith:
    """A ``Signer`` from a kid and a signing callable."""

    __slots__ = ("_sign", "kid")

    def __init__(self, kid: str, sign: Callable[[bytes], bytes]) -> None:
        self.kid = kid
        self._sign = sign

    def sign(self, payload: bytes) -> bytes:
        return self._sign(payload)

    def __repr__(self) -> str:
        return f"SignWith(kid={self.kid!r})"


class Ed25519Signer:
    """An organization's signing key in process memory (``repr`` never shows it)."""

    __slots__ = ("_key", "kid")

    def __init__(self, kid: str, private_key: Ed25519PrivateKey) -> None:
        self.kid = kid
        self._key = private_key

    @classmethod
    def from_raw(cls, kid: str, raw: bytes) -> Ed25519Signer:
        return cls(kid, Ed25519PrivateKey.from_private_bytes(raw))

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload)

    def __repr__(self) -> str:
        return f"Ed25519Signer(kid={self.kid!r})"


def ed25519_verify(public_key: bytes, payload: bytes, signature: bytes) -> bool:
    """``domain.credential.Verify`` with ``cryptography``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- secrets.json.enc ---------------------------------------------------------------


def new_secrets_key() -> bytes:
    return os.urandom(SECRETS_KEY_BYTES)


def _secrets_aad(org_id: uuid.UUID, deployment_id: uuid.UUID) -> bytes:
    return msgspec.json.encode([_SECRETS_PURPOSE, str(org_id), str(deployment_id)])


def seal_secrets(
    secrets: SecretValues, key: bytes, *, org_id: uuid.UUID, deployment_id: uuid.UUID
) -> bytes:
    """``0x01 ‖ nonce ‖ AES-256-GCM(JSON object of the secrets)``, bound to the deployment.

    The nonce is HMAC-SHA256(key, aad ‖ plaintext) truncated: deterministic for
    one key and plaintext, distinct (but for a 2^-96 chance) for different
    plaintexts under one key, so no nonce is ever reused with different data.
    """
    if len(key) != SECRETS_KEY_BYTES:
        raise ValueError(f"a bundle secrets key is {SECRETS_KEY_BYTES} bytes")
    aad = _secrets_aad(org_id, deployment_id)
    plaintext = msgspec.json.encode(secrets.reveal(), order="sorted")
    nonce = hmac.new(key, _NONCE_PURPOSE + aad + plaintext, hashlib.sha256).digest()[:NONCE_BYTES]
    return bytes([SECRETS_FORMAT]) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_secrets(
    blob: bytes, key: bytes, *, org_id: uuid.UUID, deployment_id: uuid.UUID
) -> SecretValues:
    failed = BundleRejected(
        "secrets.json.enc does not decrypt under this key for this deployment",
        code="bundle_secrets_undecryptable",
    )
    if len(key) != SECRETS_KEY_BYTES or len(blob) < 1 + NONCE_BYTES + 16:
        raise failed
    if blob[0] != SECRETS_FORMAT:
        raise failed
    try:
        plaintext = AESGCM(key).decrypt(
            blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], _secrets_aad(org_id, deployment_id)
        )
        values = msgspec.json.decode(plaintext, type=dict[str, str])
    except (InvalidTag, msgspec.DecodeError):
        raise failed from None
    return SecretValues(values)


# --- the tarball --------------------------------------------------------------------


def pack(files: Mapping[str, bytes]) -> bytes:
    """A deterministic ``.tar.gz`` of ``files`` (module docstring)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(
        filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL
    ) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def unpack(data: bytes) -> dict[str, bytes]:
    """The files of a bundle; ``bundle_malformed`` for anything but the layout's regular files."""
    if len(data) > MAX_BUNDLE_BYTES:
        reject("bundle_malformed", "the bundle is too large", size=len(data))
    # Inflate all of it first: tarfile stops at the end-of-archive blocks and would
    # never reach gzip's CRC; max_length bounds a decompression bomb.
    inflate = zlib.decompressobj(wbits=31)
    try:
        raw = inflate.decompress(data, MAX_BUNDLE_BYTES)
    except zlib.error:
        reject("bundle_malformed", "not gzip data")
    if not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
        reject("bundle_malformed", "not exactly one complete gzip member")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for info in tar:
                if not info.isreg() or info.name not in layout.FILES:
                    reject("bundle_malformed", "unexpected tar entry", entry=info.name[:200])
                if info.name in files:
                    reject("bundle_malformed", "duplicate tar entry", entry=info.name)
                if info.size > MAX_FILE_BYTES:
                    reject("bundle_malformed", "a file is too large", entry=info.name)
                member = tar.extractfile(info)
                if member is None:
                    reject("bundle_malformed", "unreadable tar entry", entry=info.name)
                files[info.name] = member.read()
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, BundleRejected):
            raise
        reject("bundle_malformed", f"not a tarball: {type(exc).__name__}")
    return files


# --- building -----------------------------------------------------------------------


class BundleInputs(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a bundle holds but the secrets' plaintext; gathered by the build job."""

    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    environment_posture: Posture
    deployment_id: uuid.UUID
    config_bundle_id: uuid.UUID
    version_id: uuid.UUID
    spec_kv: bytes  # the version's canonical spec
    spec_hash: str
    capabilities: tuple[str, ...] = ()
    tuning: Tuning
    adapters: tuple[Adapter, ...] = ()
    parameters: dict[str, str | int | bool] = {}
    approval_credential: str | None = None
    signing_keys_json: bytes


class BuiltBundle(msgspec.Struct, frozen=True, kw_only=True):
    data: bytes
    digest: str  # "sha256:<hex>" of ``data``: the content address
    manifest: Manifest

    @property
    def size(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"BuiltBundle(digest={self.digest!r}, size={len(self.data)})"


def adapters_document(
    adapters: tuple[Adapter, ...], parameters: Mapping[str, str | int | bool]
) -> bytes:
    """``adapters.json``: each secretRef becomes the name of its value in secrets.json.enc."""
    listed: list[dict[str, Any]] = []
    for adapter in adapters:
        refs = {
            field: {
                "kind": "inline" if isinstance(ref, InlineRef) else "vault",
                "secret": layout.secret_location(adapter.name, field),
            }
            for field, ref in adapter.secret_refs.items()
        }
        endpoint = adapter.endpoint if isinstance(adapter.endpoint, str) else dict(adapter.endpoint)
        listed.append(
            {
                "name": adapter.name,
                "family": adapter.family,
                "endpoint": endpoint,
                "secretRefs": refs,
            }
        )
    return msgspec.json.encode({"adapters": listed, "parameters": dict(parameters)}, order="sorted")


def build_bundle(
    inputs: BundleInputs,
    secrets: SecretValues,
    *,
    signer: Signer,
    secrets_key: bytes,
) -> BuiltBundle:
    """The signed, deterministic tarball; ``ValueError`` when the inputs contradict each other."""
    if sha256_of(inputs.spec_kv) != inputs.spec_hash:
        raise ValueError("spec_kv does not hash to spec_hash")
    expected = {
        layout.secret_location(a.name, field) for a in inputs.adapters for field in a.secret_refs
    }
    if set(secrets) != expected:
        raise ValueError("the secrets do not match the adapters' secretRefs")
    files: dict[str, bytes] = {
        layout.ADAPTERS: adapters_document(inputs.adapters, inputs.parameters),
        layout.RUNTIME_CONFIG: runtime_config_text(inputs.tuning).encode(),
        layout.SECRETS: seal_secrets(
            secrets, secrets_key, org_id=inputs.org_id, deployment_id=inputs.deployment_id
        ),
        layout.SIGNING_KEYS: inputs.signing_keys_json,
        layout.SPEC: inputs.spec_kv,
    }
    if inputs.approval_credential is not None:
        files[layout.APPROVAL] = inputs.approval_credential.encode("ascii")
    manifest = Manifest(
        kid=signer.kid,
        org_id=inputs.org_id,
        project_id=inputs.project_id,
        environment_id=inputs.environment_id,
        environment_posture=inputs.environment_posture,
        deployment_id=inputs.deployment_id,
        config_bundle_id=inputs.config_bundle_id,
        version_id=inputs.version_id,
        spec_hash=inputs.spec_hash,
        capabilities=sorted(set(inputs.capabilities)),
        approval_required=inputs.approval_credential is not None,
        files={name: sha256_of(data) for name, data in sorted(files.items())},
    )
    raw_manifest = layout.manifest_bytes(manifest)
    files[layout.MANIFEST] = raw_manifest
    files[layout.SIGNATURE] = signer.sign(raw_manifest)
    data = pack(files)
    return BuiltBundle(data=data, digest=sha256_of(data), manifest=manifest)


# --- verifying ----------------------------------------------------------------------


class VerifiedBundle(msgspec.Struct, frozen=True, kw_only=True):
    manifest: Manifest
    approval: CredentialClaims | None
    files: dict[str, bytes]
    secrets: SecretValues | None  # None when no key was given

    def __repr__(self) -> str:
        return f"VerifiedBundle(deployment_id={self.manifest.deployment_id})"


def verify_bundle(
    data: bytes,
    *,
    keys: Mapping[str, SigningKey],
    now: datetime,
    secrets_key: bytes | None = None,
    target: Target | None = None,
    digest: str | None = None,
) -> VerifiedBundle:
    """Everything an agent checks offline; raises ``BundleRejected`` or ``CoverageRejected``.

    ``keys`` is the agent's trusted key set (from the signing-keys route, e.g.
    ``domain.credential.keys_from_key_set``), never the bundle's own copy.
    ``digest`` is the content address the cloud announced (``sha256:<hex>``): the
    gzip header is outside every file digest and checksum, so only this check
    makes a changed byte anywhere in the download fail.
    """
    if digest is not None and sha256_of(data) != digest:
        reject("bundle_digest_mismatch", "the download does not match its digest", file="<bundle>")
    files = unpack(data)
    manifest, claims = layout.check_bundle(
        files, keys=keys, verify=ed25519_verify, now=now, target=target
    )
    secrets = None
    if secrets_key is not None:
        secrets = open_secrets(
            files[layout.SECRETS],
            secrets_key,
            org_id=manifest.org_id,
            deployment_id=manifest.deployment_id,
        )
    return VerifiedBundle(manifest=manifest, approval=claims, files=files, secrets=secrets)
