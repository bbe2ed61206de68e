"""Builders for the lifecycle tests: a tenancy, bundles, deployments and approvals.

Everything is built through the domain's own decisions (never by constructing
state structs), and events go through the codec as the store would keep them.
Ed25519 comes from ``cryptography``, as in the services: the domain only
fixes which bytes are signed.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from domain import config_bundle, environment, organization, project
from domain.access import Decision, Permission
from domain.adapters import InlineRef
from domain.codec import Event, convert_command, default_codec
from domain.config_bundle import BundleContent, ConfigBundle, VersionRef
from domain.credential import SigningKey
from domain.environment import Environment, Posture
from domain.organization import Organization
from domain.project import Project

CODEC = default_codec()
ORG = uuid.UUID(int=1)
PROJECT = uuid.UUID(int=2)
ENV = uuid.UUID(int=3)
OTHER_ENV = uuid.UUID(int=4)
VERSION = uuid.UUID(int=5)
BUNDLE = uuid.UUID(int=6)
ALICE = uuid.UUID(int=0xA11CE)  # requests
BOB = uuid.UUID(int=0xB0B)  # approves
AGENTS = (uuid.UUID(int=0x100), uuid.UUID(int=0x101), uuid.UUID(int=0x102))
NOW = datetime(2026, 12, 3, 18, 0, 0, tzinfo=UTC)
SPEC_HASH = "sha256:" + "ab" * 32

OPERATE = Decision(allowed=True, reason="allowed", permission=Permission.OPERATE_ENVIRONMENT)
VIEW_ONLY = Decision(
    allowed=False,
    reason="role_lacks_permission",
    permission=Permission.OPERATE_ENVIRONMENT,
    role="viewer",
)


def through_codec(events: Iterable[Event]) -> list[Event]:
    """The events as a reader of the store gets them back."""
    return [
        CODEC.decode(e.event_type, e.schema_version, e.payload)
        for e in (CODEC.encode(event) for event in events)
    ]


def an_org() -> Organization:
    org = organization.fold(
        organization.create_organization(organization.CreateOrganization(name="Acme"), org_id=ORG)
    )
    assert org is not None
    return org


def a_project() -> Project:
    p = project.fold(
        project.create_project(an_org(), project.CreateProject(name="P"), project_id=PROJECT)
    )
    assert p is not None
    return p


def an_env(posture: Posture = "prod", *, env_id: uuid.UUID = ENV, cap: int = 3) -> Environment:
    cmd = convert_command(
        environment.CreateEnvironment,
        {
            "name": f"env-{posture}",
            "posture": posture,
            "settings": {"max_inflight_deployments": cap},
        },
    )
    env = environment.fold(
        environment.create_environment(an_org(), a_project(), cmd, environment_id=env_id)
    )
    assert env is not None
    return env


def a_version(
    capabilities: tuple[str, ...] = ("http_post",), spec_hash: str = SPEC_HASH
) -> VersionRef:
    return VersionRef(
        id=VERSION, project_id=PROJECT, spec_hash=spec_hash, required_capabilities=capabilities
    )


def fake_encrypt(plaintext: bytes, where: str) -> InlineRef:
    """Stands in for AES-GCM in pure tests: reversible, and never the plaintext itself."""
    return InlineRef(key_id="k1", ciphertext=base64.urlsafe_b64encode(plaintext[::-1]).decode())


def raw_bundle(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tuning": {"profile": "low-latency", "batch_size": 32},
        "adapters": [
            {
                "name": "orders",
                "family": "kafka",
                "endpoint": "broker-1:9092,broker-2:9092",
                "secretRefs": {"token": {"kind": "inline", "value": "s3cr3t-canary"}},
            },
            {
                "name": "db",
                "family": "postgres",
                "endpoint": "postgres://app@db.internal:5432/orders",
                "secretRefs": {
                    "password": {
                        "kind": "vault",
                        "mount": "secret",
                        "path": "apps/orders/db",
                        "field": "password",
                    }
                },
            },
        ],
        "parameters": {"region": "eu-west-1", "workers": 4, "dry": False},
    }
    body.update(overrides)
    return body


def a_content(**overrides: Any) -> BundleContent:
    body = raw_bundle(**overrides)
    unsealed = config_bundle.validate_bundle(body["tuning"], body["adapters"], body["parameters"])
    return config_bundle.seal(unsealed, fake_encrypt)


def a_bundle(
    env: Environment,
    *,
    bundle_id: uuid.UUID = BUNDLE,
    capabilities: tuple[str, ...] = ("http_post",),
    spec_hash: str = SPEC_HASH,
) -> ConfigBundle:
    events = config_bundle.create_bundle(
        an_org(),
        a_project(),
        env,
        a_version(capabilities, spec_hash),
        a_content(),
        bundle_id=bundle_id,
    )
    bundle = config_bundle.fold(through_codec(events))
    assert bundle is not None
    return bundle


class Signer:
    """An Ed25519 key pair and the ``sign``/``verify`` callables the domain takes."""

    def __init__(self, kid: str = "kid-1") -> None:
        self.kid = kid
        self.private = Ed25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, payload: bytes) -> bytes:
        return self.private.sign(payload)

    def key(self, **fields: Any) -> SigningKey:
        return SigningKey(kid=self.kid, public_key=self.public, **fields)


def verify(public_key: bytes, payload: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True
