from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from ops.config import ConfigError, Settings, split_host_port
from ops.services.s3 import S3Ports
from ops.stack import (
    SERVICES,
    NatsState,
    PostgresState,
    S3State,
    StackState,
    VaultState,
    services_needed,
)

P = "BYTEOR_CLOUD_"


def settings(**env: str) -> Settings:
    return Settings.from_env({P + key: value for key, value in env.items()})


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({"UNRELATED": "x", "HOME": "/root"})
    assert s.home == tmp_path / ".byteor"
    assert s.database_url is None
    assert s.nats_url is None
    assert s.s3_endpoint is None
    assert s.s3_access_key is None
    assert s.s3_secret_key is None
    assert s.s3_bucket == "byteor-cloud"
    assert s.vault_addr is None
    assert s.vault_token is None
    assert s.api_bind_addr == "127.0.0.1:8080"
    assert s.api_bind == ("127.0.0.1", 8080)
    assert s.worker_bind_addr == "127.0.0.1:8081"
    assert s.worker_bind == ("127.0.0.1", 8081)
    assert s.deployment_mode == "combined"
    assert s.runs_api and s.runs_worker
    assert s.public_base_url == "http://127.0.0.1:8080"
    assert s.log_level == "INFO"
    assert s.log_format == "json"
    assert (s.db_pool_min, s.db_pool_max) == (2, 20)
    assert s.db_role == "byteor_app"
    assert s.projection_wait_max_ms == 5000
    assert s.credential_cache_s == 10.0


def test_reads_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(P + "LOG_LEVEL", "debug")
    assert Settings.from_env().log_level == "DEBUG"


def test_overrides(tmp_path: Path) -> None:
    s = settings(
        HOME=str(tmp_path / "h"),
        DATABASE_URL="postgresql://app:pw@db.internal:5432/byteor",
        NATS_URL="nats://n1:4222, nats://n2:4222",
        S3_ENDPOINT="https://s3.example.com/",
        S3_ACCESS_KEY="AK",
        S3_SECRET_KEY="SK",
        S3_BUCKET="my.bucket-1",
        VAULT_ADDR="https://vault.example.com:8200",
        VAULT_TOKEN="hvs.x",
        API_BIND_ADDR="0.0.0.0:9000",
        WORKER_BIND_ADDR="[::1]:9001",
        DEPLOYMENT_MODE="Worker",
        LOG_LEVEL="warning",
        LOG_FORMAT="text",
        DB_POOL_MIN="0",
        DB_POOL_MAX="5",
        DB_ROLE="svc_role",
        PROJECTION_WAIT_MAX_MS="0",
        CREDENTIAL_CACHE_S="0",
    )
    assert s.home == tmp_path / "h"
    assert s.database_url == "postgresql://app:pw@db.internal:5432/byteor"
    assert s.nats_url == "nats://n1:4222,nats://n2:4222"
    assert s.s3_endpoint == "https://s3.example.com"
    assert (s.s3_access_key, s.s3_secret_key, s.s3_bucket) == ("AK", "SK", "my.bucket-1")
    assert (s.vault_addr, s.vault_token) == ("https://vault.example.com:8200", "hvs.x")
    assert s.api_bind == ("0.0.0.0", 9000)
    assert s.worker_bind == ("::1", 9001)
    assert s.deployment_mode == "worker"
    assert s.runs_worker and not s.runs_api
    # A wildcard bind address is not a URL anyone can use: derive a loopback one.
    assert s.public_base_url == "http://127.0.0.1:9000"
    assert (s.log_level, s.log_format) == ("WARNING", "text")
    assert (s.db_pool_min, s.db_pool_max) == (0, 5)
    assert s.db_role == "svc_role"
    assert s.projection_wait_max_ms == 0
    assert s.credential_cache_s == 0.0


def test_public_base_url_follows_api_bind_unless_given() -> None:
    assert settings(API_BIND_ADDR="10.1.2.3:80").public_base_url == "http://10.1.2.3:80"
    assert settings(API_BIND_ADDR="[::1]:80").public_base_url == "http://[::1]:80"
    given = settings(API_BIND_ADDR="10.1.2.3:80", PUBLIC_BASE_URL="https://cloud.example.com/")
    assert given.public_base_url == "https://cloud.example.com"


def test_non_loopback_and_named_hosts_are_allowed() -> None:
    assert settings(API_BIND_ADDR="api.internal:443").api_bind == ("api.internal", 443)
    assert settings(WORKER_BIND_ADDR="192.168.1.10:0").worker_bind == ("192.168.1.10", 0)


def test_empty_variables_count_as_unset() -> None:
    s = settings(DATABASE_URL="", DB_POOL_MAX=" ", DEPLOYMENT_MODE="")
    assert s.database_url is None
    assert s.db_pool_max == 20
    assert s.deployment_mode == "combined"


def test_small_pool_max_lowers_the_default_min() -> None:
    assert (settings(DB_POOL_MAX="1").db_pool_min, settings(DB_POOL_MAX="1").db_pool_max) == (1, 1)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DB_POOL_MAX", "x", "BYTEOR_CLOUD_DB_POOL_MAX: expected an integer, got 'x'"),
        ("DB_POOL_MIN", "1.5", "BYTEOR_CLOUD_DB_POOL_MIN: expected an integer, got '1.5'"),
        ("DB_POOL_MAX", "0", "BYTEOR_CLOUD_DB_POOL_MAX: expected an integer, got '0'"),
        ("PROJECTION_WAIT_MAX_MS", "-1", "BYTEOR_CLOUD_PROJECTION_WAIT_MAX_MS: expected an"),
        ("PROJECTION_WAIT_MAX_MS", "soon", "BYTEOR_CLOUD_PROJECTION_WAIT_MAX_MS: expected an"),
        ("DEPLOYMENT_MODE", "both", "BYTEOR_CLOUD_DEPLOYMENT_MODE: expected one of api, worker"),
        ("LOG_FORMAT", "xml", "BYTEOR_CLOUD_LOG_FORMAT: expected one of json, text"),
        ("LOG_LEVEL", "loud", "BYTEOR_CLOUD_LOG_LEVEL: expected one of DEBUG"),
        ("API_BIND_ADDR", "8080", "BYTEOR_CLOUD_API_BIND_ADDR: expected host:port, got '8080'"),
        ("API_BIND_ADDR", "localhost", "BYTEOR_CLOUD_API_BIND_ADDR: expected host:port"),
        ("API_BIND_ADDR", ":8080", "BYTEOR_CLOUD_API_BIND_ADDR: expected host:port"),
        ("API_BIND_ADDR", "127.0.0.1:http", "BYTEOR_CLOUD_API_BIND_ADDR: expected host:port"),
        ("API_BIND_ADDR", "127.0.0.1:70000", "BYTEOR_CLOUD_API_BIND_ADDR: expected host:port"),
        ("API_BIND_ADDR", "300.1.1.1:80", "BYTEOR_CLOUD_API_BIND_ADDR: expected host:port"),
        ("API_BIND_ADDR", "bad_host!:80", "BYTEOR_CLOUD_API_BIND_ADDR: expected host:port"),
        ("API_BIND_ADDR", "::1:80", "BYTEOR_CLOUD_API_BIND_ADDR: expected host:port"),
        ("WORKER_BIND_ADDR", "[zz]:80", "BYTEOR_CLOUD_WORKER_BIND_ADDR: expected host:port"),
        ("DATABASE_URL", "mysql://x/y", "BYTEOR_CLOUD_DATABASE_URL: expected a postgresql://"),
        ("DATABASE_URL", "postgresql://h:port/db", "BYTEOR_CLOUD_DATABASE_URL: expected"),
        ("NATS_URL", "nats://a:4222,http://b", "BYTEOR_CLOUD_NATS_URL: expected nats://"),
        ("S3_ENDPOINT", "s3.example.com", "BYTEOR_CLOUD_S3_ENDPOINT: expected an http(s) URL"),
        ("VAULT_ADDR", "http://", "BYTEOR_CLOUD_VAULT_ADDR: expected an http(s) URL"),
        ("PUBLIC_BASE_URL", "ftp://x", "BYTEOR_CLOUD_PUBLIC_BASE_URL: expected an http(s) URL"),
        ("S3_BUCKET", "Bad_Bucket", "BYTEOR_CLOUD_S3_BUCKET: expected an S3 bucket name"),
        ("DB_ROLE", "1role", "BYTEOR_CLOUD_DB_ROLE: expected an SQL identifier"),
        ("DB_ROLE", "a; drop", "BYTEOR_CLOUD_DB_ROLE: expected an SQL identifier"),
        ("CREDENTIAL_CACHE_S", "-1", "BYTEOR_CLOUD_CREDENTIAL_CACHE_S: expected a number"),
        ("CREDENTIAL_CACHE_S", "301", "BYTEOR_CLOUD_CREDENTIAL_CACHE_S: expected a number"),
        ("CREDENTIAL_CACHE_S", "nan", "BYTEOR_CLOUD_CREDENTIAL_CACHE_S: expected a number"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings(**{name: value})
    assert str(err.value).startswith(expected), str(err.value)
    assert str(err.value).startswith(P + name + ": ")


def test_pool_min_above_max_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^BYTEOR_CLOUD_DB_POOL_MIN: must not exceed"):
        settings(DB_POOL_MIN="10", DB_POOL_MAX="5")


def test_s3_keys_come_in_pairs() -> None:
    with pytest.raises(ConfigError, match=r"^BYTEOR_CLOUD_S3_SECRET_KEY: must be set together"):
        settings(S3_ACCESS_KEY="k")
    with pytest.raises(ConfigError, match=r"^BYTEOR_CLOUD_S3_ACCESS_KEY: must be set together"):
        settings(S3_SECRET_KEY="k")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_settings_are_frozen() -> None:
    s = settings()
    with pytest.raises(AttributeError):
        s.db_pool_max = 3  # type: ignore[misc]


def test_repr_hides_secrets() -> None:
    s = settings(
        DATABASE_URL="postgresql://app:hunter2@db/byteor",
        S3_ACCESS_KEY="AKID",
        S3_SECRET_KEY="s3cr3t",
        VAULT_TOKEN="hvs.t0ken",
    )
    text = repr(s)
    for secret in ("hunter2", "s3cr3t", "hvs.t0ken"):
        assert secret not in text
        assert secret not in str(s)
    assert "postgresql://app:***@db/byteor" in text
    assert "AKID" in text


def test_errors_do_not_echo_passwords() -> None:
    with pytest.raises(ConfigError) as err:
        settings(DATABASE_URL="postgresql://app:hunter2@db:port/x")
    assert "hunter2" not in str(err.value)
    assert "postgresql://app:***@db:port/x" in str(err.value)


def test_split_host_port() -> None:
    assert split_host_port("localhost:1") == ("localhost", 1)
    assert split_host_port("[2001:db8::1]:443") == ("2001:db8::1", 443)
    with pytest.raises(ValueError):
        split_host_port("localhost")


def _state() -> StackState:
    ports = S3Ports(
        s3=1001, s3_grpc=1002, master=1003, master_grpc=1004,
        volume=1005, volume_grpc=1006, filer=1007, filer_grpc=1008,
    )  # fmt: skip
    return StackState(
        postgres=PostgresState(port=5001),
        nats=NatsState(port=5002, monitor_port=5003),
        s3=S3State(ports=ports, access_key="AK", secret_key="SK"),
        vault=VaultState(port=5004, token="tok"),
    )


def test_with_stack_fills_only_unset_urls() -> None:
    embedded = settings().with_stack(_state())
    assert embedded.database_url == "postgresql://postgres@127.0.0.1:5001/byteor"
    assert embedded.nats_url == "nats://127.0.0.1:5002"
    assert embedded.s3_endpoint == "http://127.0.0.1:1001"
    assert (embedded.s3_access_key, embedded.s3_secret_key) == ("AK", "SK")
    assert (embedded.vault_addr, embedded.vault_token) == ("http://127.0.0.1:5004", "tok")

    external = settings(
        DATABASE_URL="postgresql://db/x",
        S3_ENDPOINT="https://s3.example.com",
        S3_ACCESS_KEY="mine",
        S3_SECRET_KEY="mine-too",
    ).with_stack(_state())
    assert external.database_url == "postgresql://db/x"
    assert (external.s3_endpoint, external.s3_access_key) == ("https://s3.example.com", "mine")
    assert external.s3_secret_key == "mine-too"
    assert external.nats_url == "nats://127.0.0.1:5002"

    assert settings().with_stack(StackState()) == settings()


def test_services_needed_skips_external_ones() -> None:
    assert services_needed(settings()) == SERVICES
    assert services_needed(settings(DATABASE_URL="postgresql://db/x")) == ("nats", "s3", "vault")
    everything = settings(
        DATABASE_URL="postgresql://db/x",
        NATS_URL="nats://n:4222",
        S3_ENDPOINT="http://s3:9000",
        VAULT_ADDR="http://vault:8200",
    )
    assert services_needed(everything) == ()


def test_state_file_round_trip_keeps_secrets_out_of_repr() -> None:
    state = _state()
    decoded = msgspec.json.decode(msgspec.json.encode(state), type=StackState)
    assert decoded == state
    assert "SK" not in repr(state) and "tok" not in repr(state)
