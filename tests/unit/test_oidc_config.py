"""BYTEOR_CLOUD_OIDC_*: unset means password login; set, an issuer and a client id
at least, each bad value named in the error."""

from __future__ import annotations

import pytest

from ops.cli import oidc_settings
from ops.config import ConfigError, Settings

P = "BYTEOR_CLOUD_"


def settings(**env: str) -> Settings:
    return Settings.from_env({P + key: value for key, value in env.items()})


def test_no_issuer_means_no_oidc() -> None:
    s = settings()
    assert (s.oidc_issuer, s.oidc_client_id, s.oidc_client_secret, s.oidc_redirect_url) == (
        None,
        None,
        None,
        None,
    )
    assert oidc_settings(s) is None


def test_an_issuer_with_a_client_id_is_enough() -> None:
    s = settings(OIDC_ISSUER="https://id.example.com", OIDC_CLIENT_ID="byteor")
    assert s.oidc_issuer == "https://id.example.com"
    assert s.oidc_client_secret is None  # a public client
    assert s.oidc_redirect_url == "http://127.0.0.1:8080/auth/callback"
    oidc = oidc_settings(s)
    assert oidc is not None and oidc.client_id == "byteor" and oidc.client_secret is None


def test_the_redirect_url_follows_the_public_base_url_unless_given() -> None:
    base = {"OIDC_ISSUER": "https://id.example.com/", "OIDC_CLIENT_ID": "c"}
    s = settings(**base, PUBLIC_BASE_URL="https://cloud.example.com")
    assert s.oidc_redirect_url == "https://cloud.example.com/auth/callback"
    assert s.oidc_issuer == "https://id.example.com/"  # kept exactly, slash and all
    s = settings(**base, OIDC_REDIRECT_URL="https://edge.example.com/byteor/auth/callback")
    assert s.oidc_redirect_url == "https://edge.example.com/byteor/auth/callback"


def test_the_client_secret_is_masked() -> None:
    s = settings(
        OIDC_ISSUER="https://id.example.com", OIDC_CLIENT_ID="c", OIDC_CLIENT_SECRET="hunter2-x"
    )
    assert s.oidc_client_secret == "hunter2-x"
    assert "hunter2-x" not in repr(s)
    oidc = oidc_settings(s)
    assert oidc is not None and "hunter2-x" not in repr(oidc)


@pytest.mark.parametrize("host", ["127.0.0.1:9000", "localhost:9000", "[::1]:9000"])
def test_http_is_allowed_for_a_loopback_issuer(host: str) -> None:
    s = settings(OIDC_ISSUER=f"http://{host}", OIDC_CLIENT_ID="c")
    assert s.oidc_issuer == f"http://{host}"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OIDC_ISSUER": "http://id.example.com", "OIDC_CLIENT_ID": "c"}, "OIDC_ISSUER: expected"),
        ({"OIDC_ISSUER": "ftp://id.example.com", "OIDC_CLIENT_ID": "c"}, "OIDC_ISSUER: expected"),
        ({"OIDC_ISSUER": "https://", "OIDC_CLIENT_ID": "c"}, "OIDC_ISSUER: expected"),
        ({"OIDC_ISSUER": "https://id.example.com?x=1", "OIDC_CLIENT_ID": "c"}, "no query"),
        ({"OIDC_ISSUER": "https://id.example.com"}, "OIDC_CLIENT_ID: required when"),
        ({"OIDC_CLIENT_ID": "c"}, "OIDC_CLIENT_ID: set BYTEOR_CLOUD_OIDC_ISSUER too"),
        ({"OIDC_CLIENT_SECRET": "s"}, "OIDC_CLIENT_SECRET: set BYTEOR_CLOUD_OIDC_ISSUER"),
        (
            {"OIDC_REDIRECT_URL": "https://x.example.com/auth/callback"},
            "OIDC_REDIRECT_URL: set BYTEOR_CLOUD_OIDC_ISSUER",
        ),
        (
            {
                "OIDC_ISSUER": "https://id.example.com",
                "OIDC_CLIENT_ID": "c",
                "OIDC_REDIRECT_URL": "https://x.example.com/login",
            },
            "OIDC_REDIRECT_URL: expected",
        ),
    ],
)
def test_bad_oidc_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{P}{message}" if message[0].isupper() else message):
        settings(**env)
