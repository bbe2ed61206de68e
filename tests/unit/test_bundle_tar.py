"""Deploy bundles without services: determinism, layout, and offline verification that
refuses any tampering with its own code."""

from __future__ import annotations

import gzip
import io
import tarfile
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain import bundle as layout
from domain.adapters import Adapter, InlineRef, VaultRef
from domain.bundle import BundleRejected, SecretValues, Target, secret_location, sha256_of
from domain.credential import (
    CoverageRejected,
    CredentialClaims,
    SigningKey,
    credential_payload,
    encode_credential,
    key_set_json,
    keys_from_key_set,
    rfc3339,
)
from domain.tuning import Tuning
from workers.bundle_tar import (
    BundleInputs,
    Ed25519Signer,
    SignWith,
    build_bundle,
    new_secrets_key,
    pack,
    unpack,
    verify_bundle,
)

ORG = uuid.UUID(int=1)
PROJECT = uuid.UUID(int=2)
ENV = uuid.UUID(int=3)
DEPLOYMENT = uuid.UUID(int=4)
NOW = datetime(2026, 12, 3, 18, 0, 0, tzinfo=UTC)
SPEC = b"pipeline.name=demo\nstages.0.kind=source\n"
SIGNER = Ed25519Signer("kid-a", Ed25519PrivateKey.generate())
KEY = SigningKey(kid="kid-a", public_key=SIGNER.public_key)
KEYS = {"kid-a": KEY}
SECRETS_KEY = bytes(range(32))
CANARY = "canary-inline-7f3a9c"


def credential(
    *, capabilities: list[str] | None = None, expires: timedelta = timedelta(hours=1)
) -> str:
    claims = CredentialClaims(
        v=1,
        kid=SIGNER.kid,
        org_id=str(ORG),
        project_id=str(PROJECT),
        environment_id=str(ENV),
        environment_posture="prod",
        spec_hash=sha256_of(SPEC),
        capabilities=capabilities if capabilities is not None else ["http_post"],
        issued_at=rfc3339(NOW - timedelta(minutes=1)),
        expires_at=rfc3339(NOW + expires),
        issued_by=str(uuid.UUID(int=0xB0B)),
        approval_id=str(uuid.UUID(int=9)),
    )
    payload = credential_payload(claims)
    return encode_credential(payload, SIGNER.sign(payload))


def adapters() -> tuple[Adapter, ...]:
    return (
        Adapter(
            name="db",
            family="postgres",
            endpoint="postgresql://db.example:5432/app",
            secret_refs={
                "password": InlineRef(key_id="dk_1", ciphertext="AQID"),
                "cert": VaultRef(mount="secret", path="app/db", field="cert"),
            },
        ),
        Adapter(name="out", family="http", endpoint={"url": "https://sink.example/in"}),
    )


def secrets() -> SecretValues:
    return SecretValues(
        {
            secret_location("db", "password"): CANARY,
            secret_location("db", "cert"): "vault-canary-51e0",
        }
    )


def inputs(**overrides: object) -> BundleInputs:
    fields: dict[str, object] = {
        "org_id": ORG,
        "project_id": PROJECT,
        "environment_id": ENV,
        "environment_posture": "prod",
        "deployment_id": DEPLOYMENT,
        "config_bundle_id": uuid.UUID(int=5),
        "version_id": uuid.UUID(int=6),
        "spec_kv": SPEC,
        "spec_hash": sha256_of(SPEC),
        "capabilities": ("http_post",),
        "tuning": Tuning(profile="low-latency", batch_size=64),
        "adapters": adapters(),
        "parameters": {"region": "eu-1", "replicas": 2},
        "approval_credential": credential(),
        "signing_keys_json": key_set_json([KEY]),
    }
    fields.update(overrides)
    return BundleInputs(**fields)  # type: ignore[arg-type]


def build(**overrides: object) -> bytes:
    return build_bundle(inputs(**overrides), secrets(), signer=SIGNER, secrets_key=SECRETS_KEY).data


def verify(data: bytes, **kwargs: object) -> object:
    options: dict[str, object] = {"keys": KEYS, "now": NOW, "secrets_key": SECRETS_KEY}
    options.update(kwargs)
    return verify_bundle(data, **options)  # type: ignore[arg-type]


def repack(data: bytes, change: Mapping[str, bytes | None]) -> bytes:
    files = unpack(data)
    for name, content in change.items():
        if content is None:
            files.pop(name, None)
        else:
            files[name] = content
    return pack(files)


def flip(content: bytes, at: int) -> bytes:
    return content[:at] + bytes([content[at] ^ 0x01]) + content[at + 1 :]


def test_the_same_inputs_give_byte_identical_tarballs() -> None:
    first, second = build(), build()
    assert first == second
    assert build(parameters={"region": "eu-2"}) != first
    # Ed25519 is deterministic: any Signer holding the same key gives the same bytes.
    wrapped = SignWith(SIGNER.kid, SIGNER.sign)
    assert build_bundle(inputs(), secrets(), signer=wrapped, secrets_key=SECRETS_KEY).data == first


def test_the_tarball_has_exactly_the_layout_with_fixed_headers() -> None:
    data = build()
    assert data[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(layout.FILES)
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
        assert m.isreg()


def test_the_manifest_lists_every_file_digest_and_is_signed() -> None:
    built = build_bundle(inputs(), secrets(), signer=SIGNER, secrets_key=SECRETS_KEY)
    files = unpack(built.data)
    manifest = msgspec.json.decode(files[layout.MANIFEST])
    assert manifest["kid"] == "kid-a" and manifest["spec_hash"] == sha256_of(SPEC)
    assert manifest["approval_required"] is True
    assert set(manifest["files"]) == set(layout.FILES) - {layout.MANIFEST, layout.SIGNATURE}
    for name, digest in manifest["files"].items():
        assert sha256_of(files[name]) == digest
    assert built.digest == sha256_of(built.data)
    assert files[layout.RUNTIME_CONFIG].startswith(b"tuning.batch_size=64\n")
    doc = msgspec.json.decode(files[layout.ADAPTERS])
    assert doc["parameters"] == {"region": "eu-1", "replicas": 2}
    assert doc["adapters"][0]["secretRefs"]["password"] == {
        "kind": "inline",
        "secret": "adapters/db/secretRefs/password",
    }


def test_a_genuine_bundle_verifies_and_yields_its_secrets() -> None:
    verified = verify(build(), target=Target(org_id=ORG, environment_id=ENV))
    assert verified.manifest.deployment_id == DEPLOYMENT  # type: ignore[attr-defined]
    assert verified.approval is not None  # type: ignore[attr-defined]
    assert verified.secrets.reveal() == secrets().reveal()  # type: ignore[attr-defined]


def test_an_ungoverned_bundle_has_no_approval_file_and_verifies() -> None:
    data = build(approval_credential=None, environment_posture="dev")
    assert layout.APPROVAL not in unpack(data)
    verified = verify(data)
    assert verified.approval is None  # type: ignore[attr-defined]


def test_secret_plaintext_appears_only_inside_the_encrypted_file() -> None:
    data = build()
    raw_tar = gzip.decompress(data)
    for value in secrets().reveal().values():
        assert value.encode() not in raw_tar
        assert value.encode() not in data
    assert CANARY not in repr(secrets())


@pytest.mark.parametrize("name", sorted(layout.FILES))
def test_changing_any_byte_of_any_file_fails_verification(name: str) -> None:
    data = build()
    content = unpack(data)[name]
    expected = {
        layout.MANIFEST: {"bundle_bad_signature"},
        layout.SIGNATURE: {"bundle_bad_signature"},
    }.get(name, {"bundle_digest_mismatch"})
    positions = sorted({0, len(content) // 2, len(content) - 1})
    for at in positions:
        with pytest.raises(BundleRejected) as caught:
            verify(repack(data, {name: flip(content, at)}))
        assert caught.value.code in expected, (name, at, caught.value.code)


def test_a_corrupted_archive_is_malformed_and_any_changed_byte_fails_the_digest() -> None:
    data = build()
    # Past the 10-byte header, gzip's CRC-32 and length cover every byte.
    for at in (0, 1, 20, len(data) // 2, len(data) - 5, len(data) - 1):
        with pytest.raises(BundleRejected) as caught:
            verify(flip(data, at))
        assert caught.value.code == "bundle_malformed", at
    with pytest.raises(BundleRejected) as caught:
        verify(data + b"\0")
    assert caught.value.code == "bundle_malformed"
    # The header's mtime/OS bytes are in no checksum: the announced digest covers them.
    for at in range(len(data)):
        with pytest.raises(BundleRejected):
            verify(flip(data, at), digest=sha256_of(data))
    verify(data, digest=sha256_of(data))


def test_missing_extra_and_foreign_entries_are_refused() -> None:
    data = build()
    cases = {
        layout.SECRETS: "bundle_file_missing",
        layout.APPROVAL: "bundle_file_missing",
        layout.MANIFEST: "bundle_file_missing",
    }
    for name, code in cases.items():
        with pytest.raises(BundleRejected) as caught:
            verify(repack(data, {name: None}))
        assert caught.value.code == code
    ungoverned = build(approval_credential=None)
    with pytest.raises(BundleRejected) as caught:
        verify(repack(ungoverned, {layout.APPROVAL: credential().encode()}))
    assert caught.value.code == "bundle_file_unexpected"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleRejected) as caught:
        verify(gzip.compress(raw.getvalue()))
    assert caught.value.code == "bundle_malformed"


def test_a_manifest_re_signed_by_an_unknown_key_is_refused() -> None:
    other = Ed25519Signer("kid-x", Ed25519PrivateKey.generate())
    data = build_bundle(inputs(), secrets(), signer=other, secrets_key=SECRETS_KEY).data
    with pytest.raises(BundleRejected) as caught:
        verify(data)
    assert caught.value.code == "bundle_unknown_key"
    impostor = Ed25519Signer("kid-a", Ed25519PrivateKey.generate())
    data = build_bundle(inputs(), secrets(), signer=impostor, secrets_key=SECRETS_KEY).data
    with pytest.raises(BundleRejected) as caught:
        verify(data)
    assert caught.value.code == "bundle_bad_signature"


def test_the_key_set_json_round_trip_is_what_agents_verify_with() -> None:
    keys = keys_from_key_set(key_set_json([KEY]))
    verify(build(), keys=keys)


def test_the_approval_credential_is_checked_for_coverage() -> None:
    with pytest.raises(CoverageRejected) as caught:
        verify(build(approval_credential=credential(capabilities=[])))
    assert caught.value.code == "approval_missing_capabilities"
    with pytest.raises(CoverageRejected) as caught:
        verify(build(), now=NOW + timedelta(hours=2))
    assert caught.value.code == "approval_expired"
    with pytest.raises(CoverageRejected) as caught:
        verify(build(approval_credential="not-a-credential"))
    assert caught.value.code == "approval_bad_signature"


def test_the_wrong_target_or_secrets_key_is_refused() -> None:
    data = build()
    with pytest.raises(BundleRejected) as caught:
        verify(data, target=Target(deployment_id=uuid.UUID(int=99)))
    assert caught.value.code == "bundle_wrong_target"
    with pytest.raises(BundleRejected) as caught:
        verify(data, secrets_key=new_secrets_key())
    assert caught.value.code == "bundle_secrets_undecryptable"


def test_the_build_refuses_inconsistent_inputs() -> None:
    with pytest.raises(ValueError, match="spec_hash"):
        build(spec_hash="sha256:" + "00" * 32)
    with pytest.raises(ValueError, match="secretRefs"):
        build_bundle(inputs(), SecretValues({}), signer=SIGNER, secrets_key=SECRETS_KEY)
