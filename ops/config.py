"""Settings: one frozen struct read from ``BYTEOR_CLOUD_*`` environment variables.

Every process (API, worker, CLI, tests) builds its configuration with
``Settings.from_env()``. A service URL that is not set is ``None``, which means
"use the embedded stack"; :meth:`Settings.with_stack` then fills those URLs in
from a running :class:`ops.stack.Stack`. An empty variable counts as unset.

A bad value raises :class:`ConfigError` with a message that names the
variable, e.g. ``BYTEOR_CLOUD_DB_POOL_MAX: expected an integer, got 'x'``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec

from workers.streams import JobTypeTuning

if TYPE_CHECKING:
    from commands.secret_keys import MasterKey
    from ops.stack import StackState

PREFIX = "BYTEOR_CLOUD_"

DeploymentMode = Literal["api", "worker", "combined"]
LogFormat = Literal["json", "text"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

DEPLOYMENT_MODES: tuple[DeploymentMode, ...] = ("api", "worker", "combined")
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_WILDCARD_HOSTS = {"0.0.0.0", "::"}

T = TypeVar("T")


class ConfigError(ValueError):
    """A ``BYTEOR_CLOUD_*`` variable has a value we cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything configurable about one ByteOr Cloud process."""

    home: Path
    database_url: str | None = None
    nats_url: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "byteor-cloud"
    vault_addr: str | None = None
    vault_token: str | None = None
    api_bind_addr: str = "127.0.0.1:8080"
    worker_bind_addr: str = "127.0.0.1:8081"
    deployment_mode: DeploymentMode = "combined"
    public_base_url: str = "http://127.0.0.1:8080"
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "json"
    db_pool_min: int = 2
    db_pool_max: int = 20
    db_role: str = "byteor_app"
    projection_wait_max_ms: int = 5000
    # Rate limits (commands/ratelimit.py): admitted requests per window, which is
    # a minute unless RATE_LIMIT_WINDOW_S changes it (tests shorten it).
    rate_limit_per_minute: int = 600
    rate_limit_auth_per_minute: int = 30
    rate_limit_enrollment_per_minute: int = 60
    rate_limit_artifact_per_minute: int = 120
    rate_limit_window_s: float = 60.0
    # How long an API process may answer a repeated credential from memory
    # (commands/credential_cache.py, decision 0014); 0 turns the cache off.
    credential_cache_s: float = 10.0
    # Job engine tuning (workers/): consume loops per job type in a worker
    # process, per-type overrides of workers/streams.py DEFAULT_JOB_TYPES, and
    # how long a queued job may sit without a message before the reconciler
    # sends it again (tests and benchmarks shorten these).
    worker_concurrency: int = 4
    job_settings: dict[str, JobTypeTuning] = msgspec.field(default_factory=dict)
    reconcile_grace_s: float = 300.0
    reconcile_interval_s: float = 30.0
    # OIDC login (commands/oidc_login.py): with an issuer set, people sign in
    # through that OpenID provider and local passwords are refused; without one,
    # local passwords are the way in. The redirect URL defaults to
    # PUBLIC_BASE_URL + /auth/callback.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_redirect_url: str | None = None
    # Master keys for inline secrets (ops/master_keys.py): MASTER_KEYS first,
    # then MASTER_KEY_FILE's; empty means the embedded stack's generated key.
    master_keys: tuple[MasterKey, ...] = ()
    master_key_file: Path | None = None

    # --- construction -------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read ``BYTEOR_CLOUD_*`` from ``environ`` (default: the process environment)."""
        env = _Env(environ)

        home = env.get("HOME", lambda v: Path(v).expanduser().absolute(), "a directory path")
        api_bind = env.get("API_BIND_ADDR", _bind_addr, "host:port") or "127.0.0.1:8080"
        worker_bind = env.get("WORKER_BIND_ADDR", _bind_addr, "host:port") or "127.0.0.1:8081"
        public = env.get("PUBLIC_BASE_URL", _http_url, "an http(s) URL") or _public_url(api_bind)

        access_key = env.get("S3_ACCESS_KEY", str, "")
        secret_key = env.get("S3_SECRET_KEY", str, "")
        if (access_key is None) != (secret_key is None):
            missing = "S3_SECRET_KEY" if secret_key is None else "S3_ACCESS_KEY"
            other = "S3_ACCESS_KEY" if secret_key is None else "S3_SECRET_KEY"
            raise ConfigError(f"{PREFIX}{missing}: must be set together with {PREFIX}{other}")

        pool_max = _default(env.get("DB_POOL_MAX", _positive_int, "an integer"), 20)
        pool_min = env.get("DB_POOL_MIN", _non_negative_int, "an integer")
        if pool_min is None:
            pool_min = min(2, pool_max)
        if pool_min > pool_max:
            raise ConfigError(
                f"{PREFIX}DB_POOL_MIN: must not exceed {PREFIX}DB_POOL_MAX "
                f"({pool_min} > {pool_max})"
            )
        wait_ms = env.get("PROJECTION_WAIT_MAX_MS", _non_negative_int, "an integer")
        rate = {
            name: env.get(f"RATE_LIMIT{suffix}_PER_MINUTE", _positive_int, "an integer")
            for name, suffix in (
                ("", ""),
                ("auth_", "_AUTH"),
                ("enrollment_", "_ENROLLMENT"),
                ("artifact_", "_ARTIFACT"),
            )
        }
        rate_window = env.get("RATE_LIMIT_WINDOW_S", _window_seconds, "a number of seconds")
        cache_s = env.get("CREDENTIAL_CACHE_S", _cache_seconds, "a number of seconds")
        grace = env.get("RECONCILE_GRACE_S", _seconds, "a number of seconds")
        interval = env.get("RECONCILE_INTERVAL_S", _seconds, "a number of seconds")
        oidc = _oidc_settings(env, public)
        from ops import master_keys

        keys, key_file = master_keys.from_env(env.raw("MASTER_KEYS"), env.raw("MASTER_KEY_FILE"))

        return cls(
            home=home if home is not None else Path.cwd() / ".byteor",
            database_url=env.get("DATABASE_URL", _postgres_url, "a postgresql:// URL"),
            nats_url=env.get("NATS_URL", _nats_urls, "nats:// URLs, comma separated"),
            s3_endpoint=env.get("S3_ENDPOINT", _http_url, "an http(s) URL"),
            s3_access_key=access_key,
            s3_secret_key=secret_key,
            s3_bucket=env.get("S3_BUCKET", _bucket, "an S3 bucket name") or "byteor-cloud",
            vault_addr=env.get("VAULT_ADDR", _http_url, "an http(s) URL"),
            vault_token=env.get("VAULT_TOKEN", str, ""),
            api_bind_addr=api_bind,
            worker_bind_addr=worker_bind,
            deployment_mode=env.choice("DEPLOYMENT_MODE", DEPLOYMENT_MODES) or "combined",
            public_base_url=public,
            log_level=env.choice("LOG_LEVEL", LOG_LEVELS, upper=True) or "INFO",
            log_format=env.choice("LOG_FORMAT", LOG_FORMATS) or "json",
            db_pool_min=pool_min,
            db_pool_max=pool_max,
            db_role=env.get("DB_ROLE", _identifier, "an SQL identifier") or "byteor_app",
            projection_wait_max_ms=_default(wait_ms, 5000),
            rate_limit_per_minute=_default(rate[""], 600),
            rate_limit_auth_per_minute=_default(rate["auth_"], 30),
            rate_limit_enrollment_per_minute=_default(rate["enrollment_"], 60),
            rate_limit_artifact_per_minute=_default(rate["artifact_"], 120),
            rate_limit_window_s=_default(rate_window, 60.0),
            credential_cache_s=_default(cache_s, 10.0),
            worker_concurrency=_default(
                env.get("WORKER_CONCURRENCY", _positive_int, "an integer"), 4
            ),
            job_settings=_default(
                env.get(
                    "JOB_SETTINGS",
                    _job_settings,
                    'a JSON object, e.g. {"probe": {"ack_wait_s": 2, "max_attempts": 4}}',
                ),
                {},
            ),
            reconcile_grace_s=_default(grace, 300.0),
            reconcile_interval_s=_default(interval, 30.0),
            oidc_issuer=oidc.issuer,
            oidc_client_id=oidc.client_id,
            oidc_client_secret=oidc.client_secret,
            oidc_redirect_url=oidc.redirect_url,
            master_keys=keys,
            master_key_file=key_file,
        )

    def with_stack(self, state: StackState) -> Settings:
        """Fill the unset service URLs (and their credentials) from an embedded stack."""
        changes: dict[str, object] = {}
        if self.database_url is None and state.postgres is not None:
            changes["database_url"] = state.postgres.dsn
        if self.nats_url is None and state.nats is not None:
            changes["nats_url"] = state.nats.url
        if self.s3_endpoint is None and state.s3 is not None:
            changes["s3_endpoint"] = state.s3.endpoint
            changes["s3_access_key"] = state.s3.access_key
            changes["s3_secret_key"] = state.s3.secret_key
        if self.vault_addr is None and state.vault is not None:
            changes["vault_addr"] = state.vault.addr
            changes["vault_token"] = state.vault.token
        return msgspec.structs.replace(self, **changes) if changes else self

    # --- derived values -----------------------------------------------------------

    @property
    def api_bind(self) -> tuple[str, int]:
        return split_host_port(self.api_bind_addr)

    @property
    def worker_bind(self) -> tuple[str, int]:
        return split_host_port(self.worker_bind_addr)

    @property
    def runs_api(self) -> bool:
        return self.deployment_mode in ("api", "combined")

    @property
    def runs_worker(self) -> bool:
        return self.deployment_mode in ("worker", "combined")

    def __repr__(self) -> str:
        """Like the default repr, with passwords, keys and tokens masked."""
        shown: list[str] = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in ("s3_secret_key", "vault_token", "oidc_client_secret") and value is not None:
                value = "***"
            elif name in ("database_url", "nats_url") and value is not None:
                value = _mask_password(value)
            shown.append(f"{name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__


# --- parsing helpers ---------------------------------------------------------------


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(PREFIX + name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def get(self, name: str, parse: Callable[[str], T], expected: str) -> T | None:
        value = self.raw(name)
        if value is None:
            return None
        try:
            return parse(value)
        except (ValueError, TypeError) as err:
            shown = _mask_password(value) if "://" in value else value
            detail = f"expected {expected}, got {shown!r}" if expected else "invalid value"
            reason = str(err)
            if reason and reason != detail and "invalid literal" not in reason:
                detail = f"{detail} ({reason})"
            raise ConfigError(f"{PREFIX}{name}: {detail}") from None

    def choice(self, name: str, choices: tuple[T, ...], *, upper: bool = False) -> T | None:
        value = self.raw(name)
        if value is None:
            return None
        normalised = value.upper() if upper else value.lower()
        for choice in choices:
            if choice == normalised:
                return choice
        options = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{PREFIX}{name}: expected one of {options}, got {value!r}")


def _default(value: T | None, default: T) -> T:
    return default if value is None else value


def _int(value: str) -> int:
    return int(value, 10)


def _non_negative_int(value: str) -> int:
    number = _int(value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def _positive_int(value: str) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("must be >= 1")
    return number


def _window_seconds(value: str) -> float:
    seconds = float(value)
    if not 0.06 <= seconds <= 86400:
        raise ValueError("must be between 0.06 and 86400")
    return seconds


def _cache_seconds(value: str) -> float:
    seconds = float(value)
    if not 0 <= seconds <= 300:
        raise ValueError("must be between 0 (off) and 300")
    return seconds


def _seconds(value: str) -> float:
    seconds = float(value)
    if not 0.01 <= seconds <= 86400:
        raise ValueError("must be between 0.01 and 86400")
    return seconds


def _job_settings(value: str) -> dict[str, JobTypeTuning]:
    try:
        return msgspec.json.decode(value, type=dict[str, JobTypeTuning])
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None


class _Oidc(NamedTuple):
    issuer: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    redirect_url: str | None = None


def _oidc_settings(env: _Env, public_base_url: str) -> _Oidc:
    """The OIDC_* variables: all unset, or an issuer and a client id at least."""
    issuer = env.get("OIDC_ISSUER", _issuer_url, "an https URL (http only on loopback)")
    client_id = env.raw("OIDC_CLIENT_ID")
    client_secret = env.raw("OIDC_CLIENT_SECRET")
    redirect = env.get(
        "OIDC_REDIRECT_URL", _callback_url, "an http(s) URL ending in /auth/callback"
    )
    if issuer is None:
        for name, value in (
            ("OIDC_CLIENT_ID", client_id),
            ("OIDC_CLIENT_SECRET", client_secret),
            ("OIDC_REDIRECT_URL", redirect),
        ):
            if value is not None:
                raise ConfigError(f"{PREFIX}{name}: set {PREFIX}OIDC_ISSUER too, or unset it")
        return _Oidc()
    if client_id is None:
        raise ConfigError(f"{PREFIX}OIDC_CLIENT_ID: required when {PREFIX}OIDC_ISSUER is set")
    return _Oidc(
        issuer=issuer,
        client_id=client_id,
        # Optional: a public client authenticates at the token endpoint by PKCE alone.
        client_secret=client_secret,
        redirect_url=redirect or f"{public_base_url}/auth/callback",
    )


def _issuer_url(value: str) -> str:
    # Kept exactly as given (a trailing slash included): OIDC Discovery requires
    # the provider's "issuer" to equal it, character for character.
    parts = urlsplit(value)
    _url(value, ("http", "https"))
    if parts.query or parts.fragment:
        raise ValueError("an issuer has no query or fragment")
    if parts.scheme == "http" and not _loopback(parts.hostname or ""):
        raise ValueError("http is allowed only for a loopback issuer")
    return value


def _callback_url(value: str) -> str:
    _url(value, ("http", "https"))
    parts = urlsplit(value)
    if not parts.path.endswith("/auth/callback") or parts.fragment:
        raise ValueError("the path must end in /auth/callback, without a fragment")
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host_port(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) and validate both parts."""
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError("an IPv6 host must look like [::1]:8080")
        ipaddress.IPv6Address(host)
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError("missing host or port")
        if not _valid_host(host):
            raise ValueError(f"invalid host {host!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port {port_text!r}")
    return host, int(port_text)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if re.fullmatch(r"[0-9.]+", host):
            return False  # looks like an IPv4 address but is not one
        return bool(_HOSTNAME.match(host))
    return True


def _bind_addr(value: str) -> str:
    split_host_port(value)
    return value


def _public_url(bind_addr: str) -> str:
    host, port = split_host_port(bind_addr)
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _url(value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"scheme must be {' or '.join(schemes)}")
    if not parts.hostname:
        raise ValueError("missing host")
    parts.port  # noqa: B018 - raises ValueError for a malformed port
    return value


def _http_url(value: str) -> str:
    return _url(value, ("http", "https")).rstrip("/")


def _postgres_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("scheme must be postgresql or postgres")
    parts.port  # noqa: B018 - raises ValueError for a malformed port
    return value


def _nats_urls(value: str) -> str:
    for url in value.split(","):
        _url(url.strip(), ("nats", "tls", "ws", "wss"))
    return ",".join(url.strip() for url in value.split(","))


def _bucket(value: str) -> str:
    if not _BUCKET.match(value) or ".." in value:
        raise ValueError("3-63 lowercase letters, digits, dots or hyphens")
    return value


def _identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError("letters, digits, _ or $, not starting with a digit, at most 63")
    return value


def _mask_password(url: str) -> str:
    """``url`` with the password of every ``user:password@`` part replaced by ``***``."""
    return ",".join(_mask_one(part) for part in url.split(","))


def _mask_one(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


__all__ = [
    "DEPLOYMENT_MODES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "PREFIX",
    "ConfigError",
    "DeploymentMode",
    "LogFormat",
    "LogLevel",
    "Settings",
    "split_host_port",
]
