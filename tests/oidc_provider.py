"""A real OpenID provider for the tests (npm ``oidc-provider``, tests/oidc/provider.mjs),
and a browser stand-in that signs in through its forms.

``make test`` installs the node packages (``npm ci`` in tests/oidc). The
provider listens on a free loopback port, knows one confidential client whose
redirect URI is the test API's callback, requires PKCE and accepts any login
name with any password (see provider.mjs for the claims each name gets).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from ops.stack import free_ports

HERE = Path(__file__).parent / "oidc"
# The in-process API under test answers at this base URL (httpx's ASGI transport).
API_BASE = "http://testserver"
REDIRECT_URI = f"{API_BASE}/auth/callback"


class OidcProvider:
    def __init__(self, root: Path) -> None:
        self.port = free_ports(1)[0]
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client_id = "byteor-cloud-test"
        self.client_secret = secrets.token_urlsafe(24)
        self.redirect_uri = REDIRECT_URI
        self.log = root / "oidc-provider.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        node = shutil.which("node")
        if node is None or not (HERE / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(
                "the test OpenID provider needs node and its packages: "
                "run `make test`, or `npm ci` in tests/oidc"
            )
        env = {
            **os.environ,
            "OIDC_PORT": str(self.port),
            "OIDC_CLIENT_ID": self.client_id,
            "OIDC_CLIENT_SECRET": self.client_secret,
            "OIDC_REDIRECT_URI": self.redirect_uri,
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [node, str(HERE / "provider.mjs")],
                cwd=HERE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        url = f"{self.issuer}/.well-known/openid-configuration"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the OpenID provider exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if json.load(response).get("issuer") == self.issuer:
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the OpenID provider did not serve {url} within {timeout} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = attr.get("action", "")
        elif tag == "input" and "name" in attr:
            self.fields[attr["name"]] = attr.get("value", "")


async def sign_in(provider: OidcProvider, authorize_url: str, login: str) -> str:
    """Play the browser from the provider's authorization URL to the redirect back to
    the API: fill the login form as ``login``, accept the consent form. Returns the
    callback URL the provider redirects to (with ``code``, ``state``, ``iss``)."""
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as browser:
        response = await browser.get(authorize_url)
        for _ in range(20):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(provider.redirect_uri):
                    return location
                assert urlsplit(location).netloc == urlsplit(provider.issuer).netloc, location
                response = await browser.get(location)
                continue
            assert response.status_code == 200, (response.status_code, response.text[:500])
            form = _Form()
            form.feed(response.text)
            assert form.action is not None, response.text[:500]
            fields = dict(form.fields)
            if "login" in fields:
                fields |= {"login": login, "password": "any password"}
            response = await browser.post(urljoin(str(response.url), form.action), data=fields)
        raise AssertionError("the provider never redirected back to the API")
