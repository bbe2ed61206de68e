"""Hand-written hypothesis strategies for config bundle request bodies.

``valid_bodies`` draws bodies that follow every rule of domain/tuning.py,
domain/adapters.py and domain/config_bundle.py (written from the rule tables,
not from the validator). ``MUTATIONS`` each break exactly one rule of a valid
body and say which finding (code, JSON pointer) that must produce.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from domain.adapters import looks_like_secret

Body = dict[str, Any]
Draw = Callable[[st.SearchStrategy[Any]], Any]
Mutation = Callable[[Body, Draw], tuple[str, str]]

_host = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9]{0,6}){0,2}", fullmatch=True)
_port = st.integers(min_value=1, max_value=65535)
_segment = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,11}", fullmatch=True)
_identifier = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
_safe_name = _identifier.filter(lambda n: not looks_like_secret(n))
_power_of_two = st.integers(min_value=10, max_value=24).map(lambda e: 2**e)


def _tuning_for(profile: str) -> st.SearchStrategy[dict[str, Any]]:
    common: dict[str, st.SearchStrategy[Any]] = {
        "mlockall": st.booleans(),
        "ring_capacity": _power_of_two,
        "batch_size": st.integers(min_value=1, max_value=4096),
    }
    if profile == "default":
        specific: dict[str, st.SearchStrategy[Any]] = {
            "wait_strategy": st.sampled_from(["backoff", "spin"]),
            "pinning": st.sampled_from(["none", "balanced"]),
        }
    elif profile == "low-latency":
        specific = {
            "wait_strategy": st.just("spin"),
            "pinning": st.sampled_from(["none", "balanced"]),
        }
    else:
        specific = {
            "wait_strategy": st.just("spin"),
            "pinning": st.just("isolated"),
            "rt_priority": st.integers(min_value=1, max_value=99),
        }
    return st.fixed_dictionaries({"profile": st.just(profile)}, optional={**common, **specific})


tunings = st.sampled_from(["default", "low-latency", "isolated-core"]).flatmap(_tuning_for)


def _endpoint(family: str) -> st.SearchStrategy[str]:
    def url(*schemes: str) -> st.SearchStrategy[str]:
        return st.builds(
            lambda scheme, host, port: f"{scheme}://{host}:{port}/x",
            st.sampled_from(schemes),
            _host,
            _port,
        )

    match family:
        case "file":
            return st.lists(_segment, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))
        case "kafka":
            return st.lists(
                st.builds(lambda h, p: f"{h}:{p}", _host, _port), min_size=1, max_size=3
            ).map(",".join)
        case "http":
            return url("http", "https")
        case "grpc":
            return url("grpc", "grpcs")
        case "websocket":
            return url("ws", "wss")
        case "nats":
            return url("nats", "tls")
        case "redis_streams":
            return url("redis", "rediss")
        case "rabbitmq_streams":
            return url("rabbitmq-stream")
        case "s3":
            return url("s3", "https")
        case _:
            return url("postgres", "postgresql")


_inline = st.fixed_dictionaries(
    {
        "kind": st.just("inline"),
        "value": st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    }
)
_vault = st.fixed_dictionaries(
    {
        "kind": st.just("vault"),
        "mount": st.lists(_segment, min_size=1, max_size=2).map("/".join),
        "path": st.lists(_segment, min_size=1, max_size=4).map("/".join),
        "field": _identifier,
    },
    optional={"version": st.integers(min_value=1, max_value=1000)},
)
_secret_refs = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True), _inline | _vault, max_size=3
)


@st.composite
def _adapter(draw: Draw, name: str) -> dict[str, Any]:
    family = draw(
        st.sampled_from(
            [
                "file",
                "http",
                "grpc",
                "websocket",
                "kafka",
                "nats",
                "redis_streams",
                "rabbitmq_streams",
                "s3",
                "postgres",
            ]
        )
    )
    adapter: dict[str, Any] = {"name": name, "family": family, "endpoint": draw(_endpoint(family))}
    if draw(st.booleans()):
        adapter["secretRefs"] = draw(_secret_refs)
    return adapter


@st.composite
def _adapters(draw: Draw) -> list[dict[str, Any]]:
    names = draw(
        st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True), unique=True, max_size=5)
    )
    return [draw(_adapter(name)) for name in names]


_parameter_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(st.characters(codec="utf-8"), max_size=50),
)
parameters = st.dictionaries(_safe_name, _parameter_values, max_size=6)


@st.composite
def valid_bodies(draw: Draw) -> Body:
    return {"tuning": draw(tunings), "adapters": draw(_adapters()), "parameters": draw(parameters)}


# --- one-rule mutations --------------------------------------------------------------------


def _an_adapter(body: Body, draw: Draw) -> int:
    if not body["adapters"]:
        body["adapters"].append({"name": "only", "family": "file", "endpoint": "/data/in"})
    return int(draw(st.integers(min_value=0, max_value=len(body["adapters"]) - 1)))


def _batch_out_of_range(body: Body, draw: Draw) -> tuple[str, str]:
    body["tuning"]["batch_size"] = draw(st.integers(min_value=4097) | st.integers(max_value=0))
    return "tuning_out_of_range", "/tuning/batch_size"


def _ring_not_power_of_two(body: Body, draw: Draw) -> tuple[str, str]:
    body["tuning"]["ring_capacity"] = draw(
        st.integers(min_value=1025, max_value=16_777_215).filter(lambda n: n & (n - 1))
    )
    return "tuning_not_power_of_two", "/tuning/ring_capacity"


def _unknown_tuning_key(body: Body, draw: Draw) -> tuple[str, str]:
    key = draw(_identifier.filter(lambda k: k not in body["tuning"] and k not in _TUNING_KEYS))
    body["tuning"][key] = 1
    return "tuning_unknown_key", f"/tuning/{key}"


_TUNING_KEYS = {
    "profile",
    "wait_strategy",
    "pinning",
    "mlockall",
    "rt_priority",
    "ring_capacity",
    "batch_size",
}


def _rt_priority_without_isolated_core(body: Body, draw: Draw) -> tuple[str, str]:
    body["tuning"] = {
        "profile": draw(st.sampled_from(["default", "low-latency"])),
        "rt_priority": 5,
    }
    return "tuning_profile_conflict", "/tuning/rt_priority"


def _no_profile(body: Body, draw: Draw) -> tuple[str, str]:
    body["tuning"] = {"batch_size": 8}
    return "tuning_profile_missing", "/tuning/profile"


def _bad_adapter_name(body: Body, draw: Draw) -> tuple[str, str]:
    i = _an_adapter(body, draw)
    body["adapters"][i]["name"] = draw(st.sampled_from(["", "has space", "x" * 65, "é"]))
    return "adapter_name_invalid", f"/adapters/{i}/name"


def _duplicate_name(body: Body, draw: Draw) -> tuple[str, str]:
    _an_adapter(body, draw)
    copy_of = copy.deepcopy(body["adapters"][0])
    body["adapters"].append(copy_of)
    return "adapter_name_duplicate", f"/adapters/{len(body['adapters']) - 1}/name"


def _bad_family(body: Body, draw: Draw) -> tuple[str, str]:
    i = _an_adapter(body, draw)
    body["adapters"][i]["family"] = draw(st.sampled_from(["smtp", "HTTP", "", 3]))
    return "adapter_family_invalid", f"/adapters/{i}/family"


def _password_in_url(body: Body, draw: Draw) -> tuple[str, str]:
    i = _an_adapter(body, draw)
    body["adapters"][i]["family"] = "http"
    body["adapters"][i]["endpoint"] = f"https://user:{draw(_segment)}@{draw(_host)}/in"
    return "adapter_secret_in_endpoint", f"/adapters/{i}/endpoint"


def _secret_query(body: Body, draw: Draw) -> tuple[str, str]:
    i = _an_adapter(body, draw)
    body["adapters"][i]["family"] = "http"
    name = draw(st.sampled_from(["token", "api_key", "password", "clientSecret", "sig_key"]))
    body["adapters"][i]["endpoint"] = f"https://{draw(_host)}/in?{name}=abc"
    return "adapter_secret_in_endpoint", f"/adapters/{i}/endpoint"


def _secret_endpoint_field(body: Body, draw: Draw) -> tuple[str, str]:
    i = _an_adapter(body, draw)
    adapter = body["adapters"][i]
    field = draw(st.sampled_from(["password", "apiKey", "auth_token", "credentials", "secret"]))
    adapter["endpoint"] = {"url": adapter["endpoint"], field: "hunter2"}
    return "adapter_secret_in_endpoint", f"/adapters/{i}/endpoint/{field}"


def _empty_inline_value(body: Body, draw: Draw) -> tuple[str, str]:
    i = _an_adapter(body, draw)
    refs = body["adapters"][i].setdefault("secretRefs", {})
    refs["token"] = {"kind": "inline", "value": ""}
    return "secret_ref_value_invalid", f"/adapters/{i}/secretRefs/token/value"


def _vault_path_escape(body: Body, draw: Draw) -> tuple[str, str]:
    i = _an_adapter(body, draw)
    refs = body["adapters"][i].setdefault("secretRefs", {})
    refs["token"] = {"kind": "vault", "mount": "kv", "path": "a/../b", "field": "f"}
    return "secret_ref_vault_invalid", f"/adapters/{i}/secretRefs/token/path"


def _unknown_kind(body: Body, draw: Draw) -> tuple[str, str]:
    i = _an_adapter(body, draw)
    refs = body["adapters"][i].setdefault("secretRefs", {})
    refs["token"] = {"kind": draw(st.sampled_from(["env", "file", "", None])), "value": "x"}
    return "secret_ref_kind_invalid", f"/adapters/{i}/secretRefs/token/kind"


def _ciphertext_echoed_back(body: Body, draw: Draw) -> tuple[str, str]:
    i = _an_adapter(body, draw)
    refs = body["adapters"][i].setdefault("secretRefs", {})
    refs["token"] = {"kind": "inline", "value": "x", "key_id": "k1"}
    return "secret_ref_unknown_key", f"/adapters/{i}/secretRefs/token/key_id"


def _secret_like_parameter(body: Body, draw: Draw) -> tuple[str, str]:
    name = draw(st.sampled_from(["db_password", "apiKey", "token", "private_key"]))
    body["parameters"][name] = "x"
    return "parameter_secret_like", f"/parameters/{name}"


def _float_parameter(body: Body, draw: Draw) -> tuple[str, str]:
    name = draw(_safe_name.filter(lambda n: n not in body["parameters"]))
    body["parameters"][name] = draw(st.floats(allow_nan=False)) if draw(st.booleans()) else None
    return "parameter_value_invalid", f"/parameters/{name}"


MUTATIONS: tuple[Mutation, ...] = (
    _batch_out_of_range,
    _ring_not_power_of_two,
    _unknown_tuning_key,
    _rt_priority_without_isolated_core,
    _no_profile,
    _bad_adapter_name,
    _duplicate_name,
    _bad_family,
    _password_in_url,
    _secret_query,
    _secret_endpoint_field,
    _empty_inline_value,
    _vault_path_escape,
    _unknown_kind,
    _ciphertext_echoed_back,
    _secret_like_parameter,
    _float_parameter,
)
