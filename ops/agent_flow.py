"""The reference agent's deployment flow (DOMAIN.md §6), over HTTP with its ``bya_`` key.

One ``sync`` is what an agent does each time it looks for work:

1. fetch the organization's key set (``GET /agents/{id}/signing-keys``) — the
   only keys it trusts, never the bundle's own copy;
2. ask for its current deployment (``GET /agents/{id}/deployments/current``);
   nothing to do when there is none or it has reported on it already;
3. download the bundle (``GET /agents/{id}/bundles/{deployment}``) and verify it
   offline (``workers.bundle_tar.verify_bundle``: the announced digest, the
   manifest signature, every file digest, the target, the approval credential's
   coverage) and decrypt ``secrets.json.enc`` with the delivered key;
4. report ``activated`` with the tuning it applied, or ``failed`` with the
   rejection code when verification failed.

The simulator (``byteor-cloud agent simulate``), the tests and the deploy bench
call this; it holds no state of its own between calls.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import msgspec

from domain.bundle import Target
from domain.credential import SigningKey, keys_from_key_set
from domain.errors import DomainError
from workers.bundle_tar import VerifiedBundle, verify_bundle

SyncOutcome = Literal["idle", "reported_already", "activated", "failed"]


class AgentFlowError(Exception):
    """The cloud answered something this flow cannot go on with."""

    def __init__(self, step: str, status: int, body: str) -> None:
        super().__init__(f"{step}: HTTP {status}: {body[:300]}")
        self.step = step
        self.status = status


class SyncResult(msgspec.Struct, frozen=True, kw_only=True):
    outcome: SyncOutcome
    deployment_id: uuid.UUID | None = None
    status: str | None = None  # the deployment's status after the report
    rejection: str | None = None  # the verification code when ``failed``
    secrets: int = 0  # how many secrets were decrypted

    def __repr__(self) -> str:
        return f"SyncResult(outcome={self.outcome!r}, deployment_id={self.deployment_id})"


class Agent:
    """One enrolled agent: its id and key, on an HTTP client whose base URL is the API."""

    def __init__(self, client: httpx.AsyncClient, agent_id: uuid.UUID | str, api_key: str) -> None:
        self.client = client
        self.agent_id = uuid.UUID(str(agent_id))
        self._headers = {"Authorization": f"Bearer {api_key}"}

    def __repr__(self) -> str:
        return f"Agent({self.agent_id})"

    @property
    def base(self) -> str:
        return f"/api/v1/agents/{self.agent_id}"

    async def _get(self, step: str, path: str) -> httpx.Response:
        r = await self.client.get(path, headers=self._headers)
        if r.status_code != 200:
            raise AgentFlowError(step, r.status_code, r.text)
        return r

    async def key_set(self) -> dict[str, SigningKey]:
        return keys_from_key_set((await self._get("key set", f"{self.base}/signing-keys")).content)

    async def current(self) -> dict[str, Any] | None:
        body = (await self._get("current", f"{self.base}/deployments/current")).json()
        found: dict[str, Any] | None = body["deployment"]
        return found

    async def download(self, current: dict[str, Any]) -> bytes:
        return (await self._get("download", str(current["download_url"]))).content

    async def report(
        self,
        deployment_id: uuid.UUID | str,
        state: Literal["activated", "failed"],
        *,
        reason: str | None = None,
        applied_tuning: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"state": state, "applied_tuning": applied_tuning or []}
        if reason is not None:
            body["reason"] = reason
        r = await self.client.post(
            f"{self.base}/deployments/{deployment_id}/status", json=body, headers=self._headers
        )
        if r.status_code != 200:
            raise AgentFlowError("report", r.status_code, r.text)
        answer: dict[str, Any] = r.json()
        return answer

    def verify(
        self,
        data: bytes,
        current: dict[str, Any],
        keys: dict[str, SigningKey],
        now: datetime | None = None,
    ) -> VerifiedBundle:
        """Offline: raises ``BundleRejected``/``CoverageRejected`` (each with its code)."""
        return verify_bundle(
            data,
            keys=keys,
            now=now or datetime.now(UTC),
            secrets_key=_unb64(str(current["bundle_key"])),
            target=Target(
                org_id=uuid.UUID(current["org_id"]),
                project_id=uuid.UUID(current["project_id"]),
                environment_id=uuid.UUID(current["environment_id"]),
                deployment_id=uuid.UUID(current["id"]),
            ),
            digest=str(current["bundle_digest"]),
        )

    async def sync(self, *, applied_tuning: list[dict[str, Any]] | None = None) -> SyncResult:
        """Look for work once: pull, verify and report (see the module docstring)."""
        keys = await self.key_set()
        current = await self.current()
        if current is None:
            return SyncResult(outcome="idle")
        deployment_id = uuid.UUID(current["id"])
        if current["reported"] is not None or current["status"] != "deploying":
            return SyncResult(
                outcome="reported_already", deployment_id=deployment_id, status=current["status"]
            )
        data = await self.download(current)
        try:
            verified = self.verify(data, current, keys)
        except DomainError as exc:
            answer = await self.report(deployment_id, "failed", reason=f"{exc.code}: {exc}")
            return SyncResult(
                outcome="failed",
                deployment_id=deployment_id,
                status=answer["status"],
                rejection=exc.code,
            )
        answer = await self.report(deployment_id, "activated", applied_tuning=applied_tuning)
        return SyncResult(
            outcome="activated",
            deployment_id=deployment_id,
            status=answer["status"],
            secrets=0 if verified.secrets is None else len(verified.secrets),
        )


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
