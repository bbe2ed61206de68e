"""Config bundle: a version plus tuning, adapters and parameters, for one environment.

State machine (stream ``config_bundle-<id>``)::

    (none) ──create_bundle──► active ──update_bundle──► active   (not once used)
                                │  ──use_bundle────► active, locked (one event per deployment)
                                └──delete_bundle──► deleted      (not once used)

    deleted is terminal: every later command answers NotFound (bundle_not_found).

Immutable once a deployment uses it (DOMAIN.md §5): a deployment's request
appends ``config_bundle.used`` to the bundle's stream in the same transaction,
with the version it read, so an update racing the first deployment loses on
the stream version; after it, update and delete answer 409 ``bundle_in_use``.
A used bundle cannot be deleted either: a rollback may restore it.

Validation (``validate_bundle``) reports every broken rule as a ``Finding``
(``BundleInvalid``, 422): tuning rules in ``domain.tuning``, adapter and
``secretRefs`` rules in ``domain.adapters``, parameters below:

=========================  ============================================================
parameters_not_object      ``parameters`` is a JSON object of at most 256 entries
parameter_name_invalid     names are ``[A-Za-z_][A-Za-z0-9_.-]{0,127}``
parameter_value_invalid    values are strings (at most 4096 characters), integers
                           (int64, not booleans) or booleans
parameter_secret_like      a parameter named like a secret (secrets go in secretRefs)
=========================  ============================================================

Secrets: events hold only ``InlineRef(key_id, ciphertext)`` and ``VaultRef``;
``validate_bundle`` returns an ``UnsealedBundle`` whose inline values the write
side encrypts through ``seal``. ``content_hash`` is ``sha256:`` + hex SHA-256
of the sealed content as canonical JSON (sorted keys, compact): it names what
is stored, ciphertext included, so two bundles made from the same request
differ (each inline value is encrypted with a fresh nonce).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from typing import Any, Final, Literal, assert_never

import msgspec
from msgspec.structs import replace

from domain.adapters import Adapter, Encrypt, UnsealedAdapter, check_adapters, looks_like_secret
from domain.adapters import seal as seal_adapters
from domain.codec import CODEC, Event
from domain.environment import Environment, require_environment
from domain.errors import Conflict, InvalidHistory, NotFound
from domain.findings import BundleInvalid, Findings, child
from domain.organization import Organization
from domain.project import Project
from domain.tuning import Tuning, check_tuning

STREAM_TYPE: Final = "config_bundle"
MAX_PARAMETERS: Final = 256
MAX_PARAMETER_STRING: Final = 4096
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}(?![\s\S])")
_INT64: Final = (-(2**63), 2**63 - 1)

Status = Literal["active", "deleted"]
ParameterValue = str | int | bool


def stream_id(bundle_id: uuid.UUID) -> str:
    return f"{STREAM_TYPE}-{bundle_id}"


# --- content ---------------------------------------------------------------------------


class VersionRef(msgspec.Struct, frozen=True, kw_only=True):
    """What a bundle needs of the (immutable) version it runs; copied into the bundle."""

    id: uuid.UUID
    project_id: uuid.UUID
    spec_hash: str
    required_capabilities: tuple[str, ...] = ()


class BundleContent(msgspec.Struct, frozen=True, kw_only=True):
    tuning: Tuning
    adapters: tuple[Adapter, ...] = ()
    parameters: dict[str, ParameterValue] = {}


class UnsealedBundle(msgspec.Struct, frozen=True, kw_only=True):
    """Validated content whose inline secrets are not yet encrypted (never encodable)."""

    tuning: Tuning
    adapters: tuple[UnsealedAdapter, ...]
    parameters: dict[str, ParameterValue]


class CreateBundle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The request body; ``tuning``, ``adapters`` and ``parameters`` are checked by
    ``validate_bundle`` so that every finding carries its own code and path."""

    version_id: uuid.UUID
    tuning: Any
    adapters: Any = msgspec.field(default_factory=list)
    parameters: Any = msgspec.field(default_factory=dict)


class UpdateBundle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A full replacement of the content (the version stays)."""

    tuning: Any
    adapters: Any = msgspec.field(default_factory=list)
    parameters: Any = msgspec.field(default_factory=dict)


def validate_bundle(tuning: object, adapters: object, parameters: object) -> UnsealedBundle:
    """Every rule of the module docstring; raises BundleInvalid with all findings."""
    findings = Findings()
    checked_tuning = check_tuning(tuning, findings)
    checked_adapters = check_adapters(adapters, findings)
    checked_parameters = check_parameters(parameters, findings)
    if findings or checked_tuning is None or checked_adapters is None:
        raise BundleInvalid(findings.items)
    return UnsealedBundle(
        tuning=checked_tuning,
        adapters=checked_adapters,
        parameters=checked_parameters or {},
    )


def seal(bundle: UnsealedBundle, encrypt: Encrypt) -> BundleContent:
    """The storable content: each inline secret replaced by ``encrypt``'s ciphertext."""
    return BundleContent(
        tuning=bundle.tuning,
        adapters=seal_adapters(bundle.adapters, encrypt),
        parameters=dict(bundle.parameters),
    )


def content_hash(content: BundleContent) -> str:
    canonical = msgspec.json.encode(msgspec.to_builtins(content), order="sorted")
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def check_parameters(data: object, findings: Findings) -> dict[str, ParameterValue] | None:
    root = "/parameters"
    if not isinstance(data, dict) or len(data) > MAX_PARAMETERS:
        findings.add(
            "parameters_not_object", root, f"a JSON object of at most {MAX_PARAMETERS} entries"
        )
        return None
    good: dict[str, ParameterValue] = {}
    for name, value in data.items():
        at = child(root, name)
        if not _PARAMETER_NAME.match(name):
            findings.add("parameter_name_invalid", at, "names are [A-Za-z_][A-Za-z0-9_.-]{0,127}")
        elif looks_like_secret(name):
            findings.add("parameter_secret_like", at, "secrets go in an adapter's secretRefs")
        elif not _parameter_value_ok(value):
            findings.add(
                "parameter_value_invalid",
                at,
                f"a string (at most {MAX_PARAMETER_STRING}), an int64 or a boolean",
            )
        else:
            good[name] = value
    return good if len(good) == len(data) else None


def _parameter_value_ok(value: object) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    if not isinstance(value, str) or len(value) > MAX_PARAMETER_STRING:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate cannot be stored as JSON
        return False
    return True


# --- state and events ------------------------------------------------------------------


class ConfigBundle(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    version_id: uuid.UUID
    spec_hash: str
    required_capabilities: tuple[str, ...]
    content: BundleContent
    content_hash: str
    status: Status
    used_by: tuple[uuid.UUID, ...]  # deployments, in the order they used it
    version: int

    @property
    def locked(self) -> bool:
        return bool(self.used_by)


class ConfigBundleCreated(Event, tag="config_bundle.created", frozen=True, kw_only=True):
    bundle_id: uuid.UUID
    org_id: uuid.UUID
    project_id: uuid.UUID
    environment_id: uuid.UUID
    version_id: uuid.UUID
    spec_hash: str
    required_capabilities: tuple[str, ...] = ()
    content: BundleContent
    content_hash: str


class ConfigBundleUpdated(Event, tag="config_bundle.updated", frozen=True, kw_only=True):
    content: BundleContent
    content_hash: str


class ConfigBundleUsed(Event, tag="config_bundle.used", frozen=True, kw_only=True):
    deployment_id: uuid.UUID


class ConfigBundleDeleted(Event, tag="config_bundle.deleted", frozen=True, kw_only=True):
    pass


ConfigBundleEvent = (
    ConfigBundleCreated | ConfigBundleUpdated | ConfigBundleUsed | ConfigBundleDeleted
)
EVENTS: Final = (ConfigBundleCreated, ConfigBundleUpdated, ConfigBundleUsed, ConfigBundleDeleted)
CODEC.register(*EVENTS)


class BundleInUse(Conflict):
    code = "bundle_in_use"

    def __init__(self, bundle: ConfigBundle, action: str) -> None:
        super().__init__(
            f"cannot {action} a config bundle a deployment has used",
            context={
                "bundle_id": str(bundle.id),
                "action": action,
                "deployments": [str(d) for d in bundle.used_by],
            },
        )


def evolve(state: ConfigBundle | None, event: ConfigBundleEvent) -> ConfigBundle:
    if isinstance(event, ConfigBundleCreated):
        if state is not None:
            raise InvalidHistory(
                "config bundle created twice", context={"bundle_id": str(state.id)}
            )
        return ConfigBundle(
            id=event.bundle_id,
            org_id=event.org_id,
            project_id=event.project_id,
            environment_id=event.environment_id,
            version_id=event.version_id,
            spec_hash=event.spec_hash,
            required_capabilities=event.required_capabilities,
            content=event.content,
            content_hash=event.content_hash,
            status="active",
            used_by=(),
            version=1,
        )
    if state is None:
        raise InvalidHistory(f"{type(event).__name__} before config_bundle.created")
    version = state.version + 1
    match event:
        case ConfigBundleUpdated(content=content, content_hash=digest):
            return replace(state, content=content, content_hash=digest, version=version)
        case ConfigBundleUsed(deployment_id=deployment_id):
            return replace(state, used_by=(*state.used_by, deployment_id), version=version)
        case ConfigBundleDeleted():
            return replace(state, status="deleted", version=version)
        case _:
            assert_never(event)


def fold(events: Iterable[Event]) -> ConfigBundle | None:
    state: ConfigBundle | None = None
    for event in events:
        if not isinstance(event, ConfigBundleEvent):
            raise InvalidHistory(f"{type(event).__name__} is not a config bundle event")
        state = evolve(state, event)
    return state


# --- decisions -------------------------------------------------------------------------


def require_bundle(
    org: Organization | None,
    project: Project | None,
    environment: Environment | None,
    bundle: ConfigBundle | None,
) -> ConfigBundle:
    """The bundle if it is active and belongs to this (active) environment."""
    env = require_environment(org, project, environment)
    if bundle is None or bundle.status != "active" or bundle.environment_id != env.id:
        raise NotFound(
            "config bundle not found",
            code="bundle_not_found",
            context={"environment_id": str(env.id)},
        )
    return bundle


def create_bundle(
    org: Organization | None,
    project: Project | None,
    environment: Environment | None,
    version: VersionRef | None,
    content: BundleContent,
    *,
    bundle_id: uuid.UUID,
) -> tuple[ConfigBundleEvent, ...]:
    env = require_environment(org, project, environment)
    if version is None or version.project_id != env.project_id:
        raise NotFound(
            "version not found",
            code="version_not_found",
            context={"project_id": str(env.project_id)},
        )
    return (
        ConfigBundleCreated(
            bundle_id=bundle_id,
            org_id=env.org_id,
            project_id=env.project_id,
            environment_id=env.id,
            version_id=version.id,
            spec_hash=version.spec_hash,
            required_capabilities=tuple(sorted(set(version.required_capabilities))),
            content=content,
            content_hash=content_hash(content),
        ),
    )


def update_bundle(
    org: Organization | None,
    project: Project | None,
    environment: Environment | None,
    bundle: ConfigBundle | None,
    content: BundleContent,
) -> tuple[ConfigBundleEvent, ...]:
    current = require_bundle(org, project, environment, bundle)
    if current.locked:
        raise BundleInUse(current, "update")
    digest = content_hash(content)
    if digest == current.content_hash:
        return ()
    return (ConfigBundleUpdated(content=content, content_hash=digest),)


def delete_bundle(
    org: Organization | None,
    project: Project | None,
    environment: Environment | None,
    bundle: ConfigBundle | None,
) -> tuple[ConfigBundleEvent, ...]:
    current = require_bundle(org, project, environment, bundle)
    if current.locked:
        raise BundleInUse(current, "delete")
    return (ConfigBundleDeleted(),)


def use_bundle(bundle: ConfigBundle, deployment_id: uuid.UUID) -> tuple[ConfigBundleEvent, ...]:
    """Record a deployment's use (locks the bundle); the same deployment twice is a no-op."""
    if deployment_id in bundle.used_by:
        return ()
    return (ConfigBundleUsed(deployment_id=deployment_id),)
