"""The OpenID provider as the API sees it: discovery, the authorization request,
the code exchange and ID token validation (OpenID Connect Core 1.0 with PKCE,
RFC 7636, and the authorization response's ``iss``, RFC 9207).

authlib builds the protocol messages (authorization URL, token request, client
authentication) and validates the ID token's claims (``iss``, ``aud``, ``exp``,
``iat``, ``nonce``, ``azp``, ``at_hash``); joserfc, authlib's JOSE layer,
checks its signature against the provider's JWKS; httpx carries the requests.
authlib's ready-made httpx client is not used: it now warns that plain httpx is
deprecated in favour of httpx2, a second HTTP stack this project has no other
use for.

Discovery and the JWKS are fetched on first use and cached per process for
``METADATA_TTL``; an ID token signed with a key id the cached JWKS lacks
refetches it once (the provider rotated its keys).

Errors are DomainErrors, so every failure reaches the client as problem+json:
the provider unreachable or answering nonsense is 503, a refused code or an ID
token that does not validate is 401. Neither the code, the tokens nor the
provider's response bodies are logged.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
import msgspec
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from domain.errors import DomainError

log = logging.getLogger("byteor.oidc")

SCOPE: Final = "openid email"
METADATA_TTL: Final = timedelta(hours=1)
# Clock skew tolerated between this host and the provider for exp/iat.
LEEWAY_S: Final = 60
HTTP_TIMEOUT_S: Final = 10.0
# Symmetric algorithms would verify with the client secret, which a public
# client lacks; "none" is no signature at all.
ASYMMETRIC_ALGS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class ProviderUnavailable(DomainError):
    """The provider cannot be reached, or answers what no provider should."""

    status = 503
    code = "oidc_provider_unavailable"


class LoginFailed(DomainError):
    status = 401
    code = "oidc_login_failed"


class CodeRefused(LoginFailed):
    code = "oidc_code_refused"


class InvalidIdToken(LoginFailed):
    code = "oidc_invalid_id_token"


class OidcSettings(msgspec.Struct, frozen=True, kw_only=True):
    issuer: str
    client_id: str
    client_secret: str | None = None  # None: a public client (PKCE only)
    redirect_url: str

    def __repr__(self) -> str:
        secret = None if self.client_secret is None else "***"
        return (
            f"OidcSettings(issuer={self.issuer!r}, client_id={self.client_id!r}, "
            f"client_secret={secret!r}, redirect_url={self.redirect_url!r})"
        )


class ProviderMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of the discovery document this client uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    id_token_signing_alg_values_supported: list[str] = msgspec.field(default_factory=list)
    code_challenge_methods_supported: list[str] | None = None
    token_endpoint_auth_methods_supported: list[str] | None = None


class AuthorizationRequest(msgspec.Struct, frozen=True, kw_only=True):
    url: str  # where to send the browser
    state: str
    nonce: str
    code_verifier: str


class TokenResponse(msgspec.Struct, frozen=True, kw_only=True):
    id_token: str
    access_token: str | None = None
    token_type: str | None = None


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """Who the provider says signed in, from a validated ID token."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool


def _random() -> str:
    return secrets.token_urlsafe(32)  # 256 bits, 43 URL-safe characters


class OidcClient:
    """One relying party: this API registered at one provider as ``client_id``."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self._http = http or httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False)
        self._lock = asyncio.Lock()
        self._metadata: ProviderMetadata | None = None
        self._keys: KeySet | None = None
        self._fetched_at: datetime | None = None

    async def close(self) -> None:
        await self._http.aclose()

    # --- discovery ----------------------------------------------------------------

    async def metadata(self, now: datetime) -> ProviderMetadata:
        async with self._lock:
            fresh = self._fetched_at is not None and now - self._fetched_at < METADATA_TTL
            if self._metadata is None or not fresh:
                self._metadata = await self._discover()
                self._keys = None
                self._fetched_at = now
            return self._metadata

    async def _discover(self) -> ProviderMetadata:
        url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        raw = await self._get_json(url, "discovery document")
        try:
            found = msgspec.convert(raw, ProviderMetadata)
        except msgspec.ValidationError as exc:
            raise ProviderUnavailable(
                f"the OpenID provider's discovery document is not usable: {exc}",
                code="oidc_discovery_invalid",
            ) from None
        if found.issuer != self.settings.issuer:
            # OIDC Discovery §4.3: anything else could be a provider impersonating ours.
            raise ProviderUnavailable(
                f"the discovery document names issuer {found.issuer!r}, "
                f"not the configured {self.settings.issuer!r}",
                code="oidc_discovery_invalid",
            )
        methods = found.code_challenge_methods_supported
        if methods is not None and "S256" not in methods:
            raise ProviderUnavailable(
                "the OpenID provider does not offer PKCE with S256",
                code="oidc_discovery_invalid",
            )
        return found

    async def _key_set(self, metadata: ProviderMetadata, *, refresh: bool = False) -> KeySet:
        async with self._lock:
            if self._keys is None or refresh:
                raw = await self._get_json(metadata.jwks_uri, "JWKS")
                try:
                    self._keys = KeySet.import_key_set(raw)
                except (JoseError, ValueError, TypeError, KeyError):
                    raise ProviderUnavailable(
                        "the OpenID provider's JWKS holds no usable key",
                        code="oidc_discovery_invalid",
                    ) from None
            return self._keys

    async def _get_json(self, url: str, what: str) -> Any:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            log.warning("oidc %s unreachable: %s", what, type(exc).__name__)
            raise ProviderUnavailable(f"the OpenID provider's {what} is unreachable") from None
        if response.status_code != 200:
            raise ProviderUnavailable(
                f"the OpenID provider's {what} answered HTTP {response.status_code}"
            )
        try:
            return response.json()
        except ValueError:
            raise ProviderUnavailable(f"the OpenID provider's {what} is not JSON") from None

    # --- the flow -----------------------------------------------------------------

    async def authorization_request(self, now: datetime) -> AuthorizationRequest:
        """Where to send the browser, with a fresh state, nonce and PKCE verifier."""
        metadata = await self.metadata(now)
        state, nonce, verifier = _random(), _random(), _random() + _random()
        url = prepare_grant_uri(
            metadata.authorization_endpoint,
            self.settings.client_id,
            "code",
            redirect_uri=self.settings.redirect_url,
            scope=SCOPE,
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
        return AuthorizationRequest(url=url, state=state, nonce=nonce, code_verifier=verifier)

    async def exchange(self, code: str, code_verifier: str, now: datetime) -> TokenResponse:
        """Redeem an authorization code at the token endpoint."""
        metadata = await self.metadata(now)
        body = prepare_token_request(
            "authorization_code",
            code=code,
            redirect_uri=self.settings.redirect_url,
            code_verifier=code_verifier,
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        auth = ClientAuth(
            self.settings.client_id, self.settings.client_secret, self._auth_method(metadata)
        )
        url, headers, body = auth.prepare("POST", metadata.token_endpoint, headers, body)
        try:
            response = await self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("oidc token endpoint unreachable: %s", type(exc).__name__)
            raise ProviderUnavailable(
                "the OpenID provider's token endpoint is unreachable"
            ) from None
        if response.status_code >= 500:
            raise ProviderUnavailable(
                f"the OpenID provider's token endpoint answered HTTP {response.status_code}"
            )
        if response.status_code != 200:
            raise CodeRefused(
                f"the OpenID provider refused the authorization code ({_oauth_error(response)})"
            )
        try:
            return msgspec.json.decode(response.content, type=TokenResponse)
        except msgspec.DecodeError:
            raise InvalidIdToken("the token response carries no usable ID token") from None

    def _auth_method(self, metadata: ProviderMetadata) -> str:
        if self.settings.client_secret is None:
            return "none"
        # The discovery default is client_secret_basic (OIDC Discovery §3).
        offered = metadata.token_endpoint_auth_methods_supported or ["client_secret_basic"]
        return "client_secret_basic" if "client_secret_basic" in offered else "client_secret_post"

    async def validate(self, tokens: TokenResponse, *, nonce: str, now: datetime) -> Identity:
        """The identity in ``tokens.id_token``, once its signature, issuer, audience,
        times and nonce all check out (OIDC Core §3.1.3.7)."""
        metadata = await self.metadata(now)
        offered = metadata.id_token_signing_alg_values_supported or ["RS256"]
        algorithms = [alg for alg in offered if alg in ASYMMETRIC_ALGS]
        if not algorithms:
            # An empty list would let joserfc fall back to its defaults.
            raise ProviderUnavailable(
                f"the OpenID provider signs ID tokens only with {offered}, none of them "
                "an asymmetric algorithm",
                code="oidc_discovery_invalid",
            )
        keys = await self._key_set(metadata)
        try:
            try:
                token = jwt.decode(tokens.id_token, keys, algorithms=algorithms)
            except InvalidKeyIdError:
                keys = await self._key_set(metadata, refresh=True)
                token = jwt.decode(tokens.id_token, keys, algorithms=algorithms)
            claims = CodeIDToken(
                token.claims,
                token.header,
                {
                    "iss": {"essential": True, "value": self.settings.issuer},
                    "aud": {"essential": True, "value": self.settings.client_id},
                },
                {
                    "nonce": nonce,
                    "client_id": self.settings.client_id,
                    "access_token": tokens.access_token,
                },
            )
            claims.validate(now=int(now.timestamp()), leeway=LEEWAY_S)
        except (JoseError, ValueError, TypeError) as exc:
            # The reason (a claim's name, "bad signature") helps whoever debugs the
            # provider's configuration and reveals nothing secret.
            reason = getattr(exc, "description", None) or type(exc).__name__
            raise InvalidIdToken(f"the ID token is not valid: {reason}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidIdToken("the ID token is not valid: no subject")
        email = claims.get("email")
        return Identity(
            issuer=self.settings.issuer,
            subject=subject,
            email=email if isinstance(email, str) else None,
            # Some providers send the JSON string "true" instead of the boolean.
            email_verified=claims.get("email_verified") in (True, "true"),
        )


def _oauth_error(response: httpx.Response) -> str:
    """The RFC 6749 §5.2 error code of a refusal, if it is one; never its description."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, str) and error.isascii() and error.replace("_", "").isalnum():
        return error[:64]
    return f"HTTP {response.status_code}"
