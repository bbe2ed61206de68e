"""ID token validation and discovery checks of commands/oidc_client.py, with ID
tokens this test signs itself: the cases a well-behaved provider never produces
(wrong audience or issuer, expired, unsigned, signed by a stranger).

The provider's discovery document and JWKS are served by an in-memory httpx
transport; the whole flow against a real provider is tests/integration/test_oidc.py.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from commands.oidc_client import (
    InvalidIdToken,
    OidcClient,
    OidcSettings,
    ProviderUnavailable,
    TokenResponse,
)

ISSUER = "https://id.example.com"
CLIENT = "byteor"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
STRANGER = RSAKey.generate_key(2048, parameters={"kid": "k1"})


def discovery(**overrides: Any) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/auth",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        **overrides,
    }


def client_for(doc: dict[str, Any], keys: list[RSAKey] | None = None) -> OidcClient:
    jwks = {"keys": [k.as_dict(private=False) for k in (keys or [KEY])]}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=doc)
        if request.url.path == "/jwks":
            return httpx.Response(200, json=jwks)
        return httpx.Response(404)

    settings = OidcSettings(
        issuer=ISSUER, client_id=CLIENT, redirect_url="https://api.example.com/auth/callback"
    )
    return OidcClient(settings, http=httpx.AsyncClient(transport=httpx.MockTransport(answer)))


def claims(**overrides: Any) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": CLIENT,
        "iat": T - 5,
        "exp": T + 300,
        "nonce": "n-1",
        "email": "ada@example.com",
        "email_verified": True,
        **overrides,
    }


def signed(payload: dict[str, Any], key: RSAKey = KEY) -> TokenResponse:
    return TokenResponse(id_token=jwt.encode({"alg": "RS256", "kid": "k1"}, payload, key))


async def test_a_good_id_token_gives_the_identity() -> None:
    client = client_for(discovery())
    identity = await client.validate(signed(claims()), nonce="n-1", now=NOW)
    assert (identity.issuer, identity.subject) == (ISSUER, "user-1")
    assert (identity.email, identity.email_verified) == ("ada@example.com", True)
    await client.close()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aud": "someone-else"}, "aud"),
        ({"iss": "https://impostor.example"}, "iss"),
        ({"exp": T - 61}, "expired"),
        ({"nonce": "n-2"}, "nonce"),
        ({"nonce": None}, "nonce"),
        ({"sub": None}, "sub"),
    ],
)
async def test_an_id_token_that_does_not_check_out_is_refused(
    changes: dict[str, Any], reason: str
) -> None:
    payload = {k: v for k, v in claims(**changes).items() if v is not None}
    client = client_for(discovery())
    with pytest.raises(InvalidIdToken) as refused:
        await client.validate(signed(payload), nonce="n-1", now=NOW)
    assert reason in refused.value.detail.lower()
    assert refused.value.status == 401
    await client.close()


async def test_a_token_signed_by_another_key_or_not_at_all_is_refused() -> None:
    client = client_for(discovery())
    with pytest.raises(InvalidIdToken):
        await client.validate(signed(claims(), STRANGER), nonce="n-1", now=NOW)

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    unsigned = f"{b64({'alg': 'none'})}.{b64(claims())}."
    with pytest.raises(InvalidIdToken):
        await client.validate(TokenResponse(id_token=unsigned), nonce="n-1", now=NOW)
    with pytest.raises(InvalidIdToken):
        await client.validate(TokenResponse(id_token="not a jwt"), nonce="n-1", now=NOW)
    await client.close()


async def test_an_unverified_email_is_reported_as_such() -> None:
    client = client_for(discovery())
    identity = await client.validate(signed(claims(email_verified=False)), nonce="n-1", now=NOW)
    assert identity.email_verified is False
    identity = await client.validate(signed(claims(email_verified="true")), nonce="n-1", now=NOW)
    assert identity.email_verified is True
    await client.close()


@pytest.mark.parametrize(
    "doc",
    [
        discovery(issuer="https://impostor.example"),
        discovery(code_challenge_methods_supported=["plain"]),
        {"issuer": ISSUER},
    ],
)
async def test_a_discovery_document_we_cannot_trust_is_503(doc: dict[str, Any]) -> None:
    client = client_for(doc)
    with pytest.raises(ProviderUnavailable) as refused:
        await client.authorization_request(NOW)
    assert refused.value.status == 503
    await client.close()


async def test_only_asymmetric_signatures_are_accepted() -> None:
    client = client_for(discovery(id_token_signing_alg_values_supported=["HS256", "none"]))
    with pytest.raises(ProviderUnavailable):
        await client.validate(signed(claims()), nonce="n-1", now=NOW)
    await client.close()


async def test_the_authorization_url_carries_pkce_state_and_nonce() -> None:
    client = client_for(discovery())
    first = await client.authorization_request(NOW)
    second = await client.authorization_request(NOW)
    query = httpx.URL(first.url).params
    assert first.url.startswith(f"{ISSUER}/auth?")
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == first.state and query["nonce"] == first.nonce
    assert first.code_verifier not in first.url
    assert 43 <= len(first.code_verifier) <= 128
    assert len({first.state, first.nonce, second.state, second.nonce}) == 4
    await client.close()
