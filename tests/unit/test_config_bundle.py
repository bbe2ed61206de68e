from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from domain import config_bundle, tuning
from domain.adapters import InlineRef, Plaintext, VaultRef, looks_like_secret, public_view
from domain.config_bundle import (
    BundleInUse,
    ConfigBundleCreated,
    ConfigBundleUpdated,
    ConfigBundleUsed,
    UpdateBundle,
    content_hash,
    validate_bundle,
)
from domain.errors import NotFound
from domain.findings import BundleInvalid
from domain.tuning import Tuning
from tests.lifecycle import (
    CODEC,
    ENV,
    OTHER_ENV,
    PROJECT,
    a_bundle,
    a_content,
    a_project,
    a_version,
    an_env,
    an_org,
    fake_encrypt,
    raw_bundle,
    through_codec,
)

CANARY = "s3cr3t-canary"


def findings_of(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(BundleInvalid) as info:
        validate_bundle(body.get("tuning"), body.get("adapters", []), body.get("parameters", {}))
    assert info.value.status == 422
    assert info.value.code == "bundle_invalid"
    return [(f.code, f.path) for f in info.value.findings]


def with_tuning(**fields: Any) -> dict[str, Any]:
    return raw_bundle(tuning=fields)


def with_adapter(adapter: dict[str, Any], index: int = 0) -> dict[str, Any]:
    body = raw_bundle()
    adapters = list(body["adapters"])
    if index < len(adapters):
        adapters[index] = adapter
    else:
        adapters.append(adapter)
    return raw_bundle(adapters=adapters)


def http(**fields: Any) -> dict[str, Any]:
    return {"name": "hook", "family": "http", "endpoint": "https://hooks.example.com/in", **fields}


# --- a valid bundle ---------------------------------------------------------------------


def test_a_valid_bundle_validates_to_typed_content() -> None:
    body = raw_bundle()
    unsealed = validate_bundle(body["tuning"], body["adapters"], body["parameters"])
    assert unsealed.tuning == Tuning(profile="low-latency", batch_size=32)
    assert [a.name for a in unsealed.adapters] == ["orders", "db"]
    assert unsealed.adapters[0].secret_refs["token"] == Plaintext(CANARY)
    assert unsealed.adapters[1].secret_refs["password"] == VaultRef(
        mount="secret", path="apps/orders/db", field="password"
    )
    assert unsealed.parameters == {"region": "eu-west-1", "workers": 4, "dry": False}


def test_an_inline_value_never_shows_in_a_repr_and_cannot_be_encoded_unsealed() -> None:
    body = raw_bundle()
    unsealed = validate_bundle(body["tuning"], body["adapters"], body["parameters"])
    assert CANARY not in repr(unsealed)
    with pytest.raises(TypeError):
        msgspec.json.encode(unsealed)


def test_sealing_replaces_each_inline_value_by_its_ciphertext_reference() -> None:
    seen: list[str] = []

    def encrypt(plaintext: bytes, where: str) -> InlineRef:
        seen.append(where)
        return fake_encrypt(plaintext, where)

    body = raw_bundle()
    unsealed = validate_bundle(body["tuning"], body["adapters"], body["parameters"])
    content = config_bundle.seal(unsealed, encrypt)
    assert seen == ["adapters/orders/secretRefs/token"]
    ref = content.adapters[0].secret_refs["token"]
    assert isinstance(ref, InlineRef)
    assert ref.key_id == "k1"


def test_no_event_and_no_public_view_holds_the_inline_plaintext() -> None:
    env = an_env()
    events = config_bundle.create_bundle(
        an_org(), a_project(), env, a_version(), a_content(), bundle_id=uuid.UUID(int=9)
    )
    for event in events:
        assert CANARY.encode() not in CODEC.encode(event).payload
    bundle = a_bundle(env)
    views = [public_view(a) for a in bundle.content.adapters]
    assert views[0]["secretRefs"] == {"token": {"kind": "inline", "key_id": "k1"}}
    assert views[1]["secretRefs"]["password"]["kind"] == "vault"
    assert CANARY not in str(views) and "ciphertext" not in str(views)


def test_the_content_hash_is_stable_and_follows_the_content() -> None:
    content = a_content()
    assert content_hash(content) == content_hash(a_content())
    assert content_hash(content).startswith("sha256:")
    other = a_content(parameters={"region": "us-east-1"})
    assert content_hash(other) != content_hash(content)


# --- tuning rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code", "path"),
    [
        ({"batch_size": 4}, "tuning_profile_missing", "/tuning/profile"),
        ({"profile": "turbo"}, "tuning_invalid_choice", "/tuning/profile"),
        ({"profile": 1}, "tuning_wrong_type", "/tuning/profile"),
        (
            {"profile": "default", "wait_strategy": "yield"},
            "tuning_invalid_choice",
            "/tuning/wait_strategy",
        ),
        ({"profile": "default", "pinning": None}, "tuning_wrong_type", "/tuning/pinning"),
        ({"profile": "default", "mlockall": 1}, "tuning_wrong_type", "/tuning/mlockall"),
        ({"profile": "default", "batch_size": True}, "tuning_wrong_type", "/tuning/batch_size"),
        ({"profile": "default", "batch_size": 8.0}, "tuning_wrong_type", "/tuning/batch_size"),
        ({"profile": "default", "batch_size": 0}, "tuning_out_of_range", "/tuning/batch_size"),
        ({"profile": "default", "batch_size": 4097}, "tuning_out_of_range", "/tuning/batch_size"),
        (
            {"profile": "default", "ring_capacity": 512},
            "tuning_out_of_range",
            "/tuning/ring_capacity",
        ),
        (
            {"profile": "default", "ring_capacity": 2**25},
            "tuning_out_of_range",
            "/tuning/ring_capacity",
        ),
        (
            {"profile": "default", "ring_capacity": 3000},
            "tuning_not_power_of_two",
            "/tuning/ring_capacity",
        ),
        (
            {"profile": "isolated-core", "rt_priority": 0},
            "tuning_out_of_range",
            "/tuning/rt_priority",
        ),
        (
            {"profile": "isolated-core", "rt_priority": 100},
            "tuning_out_of_range",
            "/tuning/rt_priority",
        ),
        (
            {"profile": "default", "rt_priority": 10},
            "tuning_profile_conflict",
            "/tuning/rt_priority",
        ),
        (
            {"profile": "low-latency", "pinning": "isolated"},
            "tuning_profile_conflict",
            "/tuning/pinning",
        ),
        (
            {"profile": "isolated-core", "pinning": "none"},
            "tuning_profile_conflict",
            "/tuning/pinning",
        ),
        (
            {"profile": "low-latency", "wait_strategy": "backoff"},
            "tuning_profile_conflict",
            "/tuning/wait_strategy",
        ),
        ({"profile": "default", "hugepages": True}, "tuning_unknown_key", "/tuning/hugepages"),
    ],
)
def test_each_tuning_rule_is_reported_with_its_code_and_path(
    fields: dict[str, Any], code: str, path: str
) -> None:
    assert findings_of(with_tuning(**fields)) == [(code, path)]


@pytest.mark.parametrize("value", [None, [], "low-latency", 3])
def test_tuning_that_is_not_an_object_is_refused(value: object) -> None:
    assert findings_of(raw_bundle(tuning=value)) == [("tuning_not_object", "/tuning")]


def test_isolated_core_takes_a_realtime_priority_and_every_override() -> None:
    fields = {
        "profile": "isolated-core",
        "rt_priority": 99,
        "pinning": "isolated",
        "wait_strategy": "spin",
        "mlockall": True,
        "ring_capacity": 16_777_216,
        "batch_size": 4096,
    }
    body = with_tuning(**fields)
    assert validate_bundle(body["tuning"], [], {}).tuning == msgspec.convert(fields, Tuning)


def test_requested_tuning_resolves_the_profile_defaults_under_the_overrides() -> None:
    t = Tuning(profile="low-latency", batch_size=32)
    assert dict(tuning.requested(t)) == {
        "profile": "low-latency",
        "wait_strategy": "spin",
        "pinning": "balanced",
        "mlockall": "true",
        "ring_capacity": "65536",
        "batch_size": "32",
    }
    assert tuning.runtime_config_text(Tuning(profile="isolated-core", rt_priority=7)) == (
        "tuning.batch_size=16\ntuning.mlockall=true\ntuning.pinning=isolated\n"
        "tuning.profile=isolated-core\ntuning.ring_capacity=65536\ntuning.rt_priority=7\n"
        "tuning.wait_strategy=spin\n"
    )


# --- adapter and secretRefs rules ---------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "code", "path"),
    [
        (http(name="bad name"), "adapter_name_invalid", "/adapters/2/name"),
        (http(name="orders"), "adapter_name_duplicate", "/adapters/2/name"),
        (http(family="smtp"), "adapter_family_invalid", "/adapters/2/family"),
        ({"name": "hook", "family": "http"}, "adapter_missing_key", "/adapters/2/endpoint"),
        (http(tls=True), "adapter_unknown_key", "/adapters/2/tls"),
        (
            http(endpoint="ftp://files.example.com"),
            "adapter_endpoint_invalid",
            "/adapters/2/endpoint",
        ),
        (http(endpoint="https://"), "adapter_endpoint_invalid", "/adapters/2/endpoint"),
        (http(endpoint=""), "adapter_endpoint_invalid", "/adapters/2/endpoint"),
        (http(endpoint=["https://a"]), "adapter_endpoint_invalid", "/adapters/2/endpoint"),
        (http(endpoint={"topic": "t"}), "adapter_endpoint_invalid", "/adapters/2/endpoint/url"),
        (
            http(endpoint={"url": "https://h", "opts": {"a": 1}}),
            "adapter_endpoint_invalid",
            "/adapters/2/endpoint/opts",
        ),
        (
            http(endpoint="https://user:hunter2@hooks.example.com/in"),
            "adapter_secret_in_endpoint",
            "/adapters/2/endpoint",
        ),
        (
            http(endpoint="https://hooks.example.com/in?access_token=abc"),
            "adapter_secret_in_endpoint",
            "/adapters/2/endpoint",
        ),
        (
            http(endpoint={"url": "https://h.example.com", "apiKey": "abc"}),
            "adapter_secret_in_endpoint",
            "/adapters/2/endpoint/apiKey",
        ),
        (
            http(endpoint={"url": "https://h.example.com", "db_password": "abc"}),
            "adapter_secret_in_endpoint",
            "/adapters/2/endpoint/db_password",
        ),
        (http(secretRefs=[]), "secret_refs_not_object", "/adapters/2/secretRefs"),
        (
            http(secretRefs={"bad-field": {"kind": "inline", "value": "x"}}),
            "secret_ref_field_invalid",
            "/adapters/2/secretRefs/bad-field",
        ),
        (
            http(secretRefs={"token": "plain"}),
            "secret_ref_not_object",
            "/adapters/2/secretRefs/token",
        ),
        (
            http(secretRefs={"token": {"kind": "env"}}),
            "secret_ref_kind_invalid",
            "/adapters/2/secretRefs/token/kind",
        ),
        (
            http(secretRefs={"token": {"value": "x"}}),
            "secret_ref_kind_invalid",
            "/adapters/2/secretRefs/token/kind",
        ),
        (
            http(secretRefs={"token": {"kind": "inline", "value": "x", "key_id": "k"}}),
            "secret_ref_unknown_key",
            "/adapters/2/secretRefs/token/key_id",
        ),
        (
            http(secretRefs={"token": {"kind": "inline"}}),
            "secret_ref_missing_key",
            "/adapters/2/secretRefs/token/value",
        ),
        (
            http(secretRefs={"token": {"kind": "inline", "value": ""}}),
            "secret_ref_value_invalid",
            "/adapters/2/secretRefs/token/value",
        ),
        (
            http(secretRefs={"token": {"kind": "inline", "value": 42}}),
            "secret_ref_value_invalid",
            "/adapters/2/secretRefs/token/value",
        ),
        (
            http(secretRefs={"token": {"kind": "vault", "mount": "kv", "path": "a/b"}}),
            "secret_ref_missing_key",
            "/adapters/2/secretRefs/token/field",
        ),
        (
            http(
                secretRefs={
                    "token": {"kind": "vault", "mount": "kv", "path": "a/../b", "field": "t"}
                }
            ),
            "secret_ref_vault_invalid",
            "/adapters/2/secretRefs/token/path",
        ),
        (
            http(secretRefs={"token": {"kind": "vault", "mount": "", "path": "a", "field": "t"}}),
            "secret_ref_vault_invalid",
            "/adapters/2/secretRefs/token/mount",
        ),
        (
            http(
                secretRefs={
                    "token": {
                        "kind": "vault",
                        "mount": "kv",
                        "path": "a",
                        "field": "t",
                        "version": 0,
                    }
                }
            ),
            "secret_ref_vault_invalid",
            "/adapters/2/secretRefs/token/version",
        ),
        (
            http(
                secretRefs={
                    "token": {
                        "kind": "vault",
                        "mount": "kv",
                        "path": "a",
                        "field": "t",
                        "role": "r",
                    }
                }
            ),
            "secret_ref_unknown_key",
            "/adapters/2/secretRefs/token/role",
        ),
    ],
)
def test_each_adapter_rule_is_reported_with_its_code_and_path(
    adapter: dict[str, Any], code: str, path: str
) -> None:
    assert findings_of(with_adapter(adapter, index=2)) == [(code, path)]


@pytest.mark.parametrize(
    ("family", "endpoint"),
    [
        ("file", "/var/lib/byteor/in.jsonl"),
        ("file", "file:///var/lib/byteor/in.jsonl"),
        ("http", "http://10.0.0.1:8080/ingest"),
        ("grpc", "grpcs://feeds.example.com:443"),
        ("websocket", "wss://stream.example.com/ws"),
        ("kafka", "kafka+ssl://b1.example.com:9093"),
        ("kafka", "b1:9092"),
        ("nats", "nats://nats.internal:4222"),
        ("redis_streams", "rediss://cache.internal:6380/0"),
        ("rabbitmq_streams", "rabbitmq-stream://mq.internal:5552/vhost"),
        ("s3", "s3://bucket/prefix"),
        ("postgres", "postgresql://app@db.internal/orders?sslmode=require"),
    ],
)
def test_each_family_takes_its_endpoint_form(family: str, endpoint: str) -> None:
    adapter = {"name": "a", "family": family, "endpoint": endpoint}
    assert validate_bundle({"profile": "default"}, [adapter], {}).adapters[0].endpoint == endpoint


def test_an_endpoint_object_takes_scalar_fields_beside_its_url() -> None:
    endpoint = {"url": "kafka://b1:9092", "topic": "orders", "partitions": 3, "routing_key": "id"}
    adapter = {"name": "a", "family": "kafka", "endpoint": endpoint}
    assert validate_bundle({"profile": "default"}, [adapter], {}).adapters[0].endpoint == endpoint


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("DB_PASSWORD", True),
        ("apiKey", True),
        ("api-key", True),
        ("x-auth-token", True),
        ("clientSecret", True),
        ("credentials", True),
        ("key", True),
        ("pwd", True),
        ("routing_key", False),
        ("topic", False),
        ("region", False),
        ("keyspace", False),
    ],
)
def test_secret_like_names(name: str, secret: bool) -> None:
    assert looks_like_secret(name) is secret


@pytest.mark.parametrize(
    ("adapters", "code"),
    [
        ({"name": "a"}, "adapters_not_array"),
        ([{"name": f"a{i}"} for i in range(65)], "adapters_too_many"),
    ],
)
def test_the_adapter_list_itself_is_checked(adapters: object, code: str) -> None:
    assert findings_of(raw_bundle(adapters=adapters)) == [(code, "/adapters")]


def test_a_pointer_escapes_slashes_and_tildes_in_field_names() -> None:
    adapter = http(secretRefs={"a/b~c": {"kind": "inline", "value": "x"}})
    assert findings_of(with_adapter(adapter, index=2)) == [
        ("secret_ref_field_invalid", "/adapters/2/secretRefs/a~1b~0c")
    ]


# --- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "code", "path"),
    [
        ([], "parameters_not_object", "/parameters"),
        ({"9lives": 1}, "parameter_name_invalid", "/parameters/9lives"),
        ({"api_token": "x"}, "parameter_secret_like", "/parameters/api_token"),
        ({"ratio": 0.5}, "parameter_value_invalid", "/parameters/ratio"),
        ({"nothing": None}, "parameter_value_invalid", "/parameters/nothing"),
        ({"nested": {"a": 1}}, "parameter_value_invalid", "/parameters/nested"),
        ({"huge": 2**63}, "parameter_value_invalid", "/parameters/huge"),
        ({"long": "x" * 4097}, "parameter_value_invalid", "/parameters/long"),
    ],
)
def test_each_parameter_rule_is_reported_with_its_code_and_path(
    parameters: object, code: str, path: str
) -> None:
    assert findings_of(raw_bundle(parameters=parameters)) == [(code, path)]


def test_every_broken_rule_is_reported_at_once() -> None:
    body = raw_bundle(
        tuning={"profile": "default", "batch_size": 0},
        parameters={"secret": "x"},
    )
    body["adapters"][0]["endpoint"] = "https://u:p@h.example.com"
    codes = findings_of(body)
    assert codes == [
        ("tuning_out_of_range", "/tuning/batch_size"),
        ("adapter_endpoint_invalid", "/adapters/0/endpoint"),
        ("parameter_secret_like", "/parameters/secret"),
    ]
    with pytest.raises(BundleInvalid) as info:
        validate_bundle(body["tuning"], body["adapters"], body["parameters"])
    assert [e.as_dict()["path"] for e in info.value.errors] == [p for _, p in codes]
    assert info.value.context["codes"] == sorted(c for c, _ in codes)


# --- the aggregate ------------------------------------------------------------------------


def test_create_records_the_version_and_content_in_the_environment() -> None:
    bundle = a_bundle(an_env())
    assert (bundle.environment_id, bundle.project_id, bundle.status, bundle.locked) == (
        ENV,
        PROJECT,
        "active",
        False,
    )
    assert bundle.spec_hash == a_version().spec_hash
    assert bundle.required_capabilities == ("http_post",)
    assert bundle.content_hash == content_hash(a_content())


def test_create_refuses_a_version_of_another_project() -> None:
    foreign = msgspec.structs.replace(a_version(), project_id=uuid.UUID(int=99))
    with pytest.raises(NotFound) as info:
        config_bundle.create_bundle(
            an_org(), a_project(), an_env(), foreign, a_content(), bundle_id=uuid.UUID(int=9)
        )
    assert info.value.code == "version_not_found"


def test_an_unused_bundle_can_be_updated_and_an_identical_update_is_a_no_op() -> None:
    env = an_env()
    bundle = a_bundle(env)
    same = config_bundle.update_bundle(an_org(), a_project(), env, bundle, a_content())
    assert same == ()
    changed = a_content(parameters={"region": "us-east-1"})
    events = config_bundle.update_bundle(an_org(), a_project(), env, bundle, changed)
    assert events == (ConfigBundleUpdated(content=changed, content_hash=content_hash(changed)),)


def test_a_used_bundle_is_immutable() -> None:
    env = an_env()
    bundle = a_bundle(env)
    deployment = uuid.UUID(int=77)
    used = config_bundle.use_bundle(bundle, deployment)
    assert used == (ConfigBundleUsed(deployment_id=deployment),)
    locked = config_bundle.fold([*through_codec([ConfigBundleCreated(**_created(bundle))]), *used])
    assert locked is not None and locked.locked and locked.used_by == (deployment,)
    assert config_bundle.use_bundle(locked, deployment) == ()
    changed = a_content(parameters={"region": "us-east-1"})
    with pytest.raises(BundleInUse) as info:
        config_bundle.update_bundle(an_org(), a_project(), env, locked, changed)
    assert (info.value.status, info.value.code) == (409, "bundle_in_use")
    with pytest.raises(BundleInUse):
        config_bundle.delete_bundle(an_org(), a_project(), env, locked)


def test_a_bundle_of_another_environment_or_a_deleted_one_is_not_found() -> None:
    env = an_env()
    bundle = a_bundle(env)
    other = an_env(env_id=OTHER_ENV)
    with pytest.raises(NotFound) as info:
        config_bundle.require_bundle(an_org(), a_project(), other, bundle)
    assert info.value.code == "bundle_not_found"
    deleted = config_bundle.evolve(
        bundle, config_bundle.delete_bundle(an_org(), a_project(), env, bundle)[0]
    )
    with pytest.raises(NotFound):
        config_bundle.update_bundle(an_org(), a_project(), env, deleted, a_content())


def test_the_request_bodies_are_strict_about_their_own_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"tuning": {}, "extra": 1}, UpdateBundle)


def _created(bundle: config_bundle.ConfigBundle) -> dict[str, Any]:
    return {
        "bundle_id": bundle.id,
        "org_id": bundle.org_id,
        "project_id": bundle.project_id,
        "environment_id": bundle.environment_id,
        "version_id": bundle.version_id,
        "spec_hash": bundle.spec_hash,
        "required_capabilities": bundle.required_capabilities,
        "content": bundle.content,
        "content_hash": bundle.content_hash,
    }
