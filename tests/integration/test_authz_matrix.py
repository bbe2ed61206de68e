"""The authorization matrix: every route, credential family, role and own or foreign tenant.

The routes come from the application itself (like test_bad_input), and every one
must have an entry in ``TABLE``: a new route without an entry fails, and so does
an entry whose route is gone. The expected status of each cell is derived here,
independently of ``domain.access.decide``, from DOMAIN.md §2-§3:

* no credential, or one that is malformed, unknown or revoked → 401;
* a credential of another tenant on an organization's routes → 404 (no existence leak);
* a member lacking the permission (or an API key asked to manage memberships,
  or the wrong credential family for the route) → 403; agent keys and enrollment
  tokens are the wrong family everywhere except enrollment (enrollment tokens) and
  key rotation (agent keys), where a credential of another environment or agent
  → 401 (DOMAIN.md §6: it does not authenticate anyone there);
* otherwise the request really succeeds (2xx): writes carry valid bodies and each
  destructive request gets its own fresh target.
"""

from __future__ import annotations

import itertools
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import httpx
import pytest
from litestar.routes import HTTPRoute

from commands.bootstrap import create_user
from commands.pgstore import PgEventStore
from commands.ratelimit import RateLimits
from domain import job as job_mod
from domain import organization as org_mod
from domain.access import Permission
from domain.codec import default_codec
from domain.envelope import SYSTEM, Metadata, StreamAppend
from ops.app import create_app
from projections.config_bundles import NAME as CONFIG_BUNDLES
from projections.deployments import NAME as DEPLOYMENTS
from projections.drafts import NAME as DRAFTS
from projections.feed import PgFeed
from projections.jobs import JobIndexProjection
from projections.runner import wait_for_position
from projections.tenancy import NAME as TENANCY
from tests.integration import deploy_world
from workers.consumer import JobContext
from workers.spec_ingest import SpecIngest

P = Permission
ROLES = ("org_admin", "project_admin", "operator", "viewer")
PASSWORD = "matrix password 1"

# DOMAIN.md §3, written out again on purpose (not imported from domain.access).
HOLDS: dict[str, set[Permission]] = {
    "org_admin": set(Permission),
    "project_admin": {
        P.VIEW_ORG,
        P.VIEW_PROJECT,
        P.MANAGE_PROJECT,
        P.OPERATE_PROJECT,
        P.VIEW_ENVIRONMENT,
        P.MANAGE_ENVIRONMENT,
        P.OPERATE_ENVIRONMENT,
    },
    "operator": {
        P.VIEW_ORG,
        P.VIEW_PROJECT,
        P.OPERATE_PROJECT,
        P.VIEW_ENVIRONMENT,
        P.OPERATE_ENVIRONMENT,
    },
    "viewer": {P.VIEW_ORG, P.VIEW_PROJECT, P.VIEW_ENVIRONMENT},
}

Kind = Literal[
    "org", "authenticated", "user", "session", "public", "enroll", "agent_or_org", "agent"
]


@dataclass(frozen=True)
class Rule:
    """How a route is authorized.

    ``org``: an organization's route needing ``perm`` (404 for other tenants);
    ``authenticated``: any valid credential; ``user``: user credentials only
    (PAT or session; an API key is 403); ``session``: sessions only;
    ``public``: no credential needed (a presented one is not looked at);
    ``enroll``: enrollment tokens of the environment only; ``agent_or_org``: the
    agent named in the path with its own key (for the signing key set: any agent
    of the organization), or ``org`` with ``perm``; ``agent``: the agent named in
    the path with its own key only (everyone else's credential: 403). Every rule
    but these three refuses agent keys and enrollment tokens (403).
    """

    kind: Kind
    perm: Permission | None = None
    # A public route whose success needs state from outside the matrix answers this
    # status to every caller instead of 2xx.
    answers: int | None = None


ORG = "/api/v1/orgs/{org_id:uuid}"
PROJECT = ORG + "/projects/{project_id:uuid}"
ENV = PROJECT + "/environments/{env_id:uuid}"
JOB = ORG + "/jobs/{job_id:uuid}"
AGENT = ENV + "/agents/{agent_id:uuid}"
DRAFT = PROJECT + "/drafts/{draft_id:uuid}"
VERSION = PROJECT + "/versions/{version_id:uuid}"
BUNDLE = ENV + "/bundles/{bundle_id:uuid}"
SIGNING_KEYS = ORG + "/signing-keys"
SIGNING_KEY = SIGNING_KEYS + "/{signing_key_id:uuid}"
DEPLOYMENT = ENV + "/deployments/{deployment_id:uuid}"
APPROVAL = ENV + "/approvals/{approval_id:uuid}"
AGENT_SELF = "/api/v1/agents/{agent_id:uuid}"
SPEC_KV = "pipeline.name=m\npipeline.target=SingleRing\nsingle_ring.ordering=strict\n" + (
    "single_ring.shards=1\nsingle_ring.stages.0.key=x\n"
)

TABLE: dict[tuple[str, str], Rule] = {
    ("GET", "/api/v1/me"): Rule("authenticated"),
    ("GET", "/api/v1/orgs"): Rule("authenticated"),
    ("POST", "/api/v1/orgs"): Rule("user"),
    ("GET", ORG): Rule("org", P.VIEW_ORG),
    ("PUT", ORG): Rule("org", P.MANAGE_ORG_MEMBERSHIPS),
    ("DELETE", ORG): Rule("org", P.MANAGE_ORG_MEMBERSHIPS),
    ("GET", ORG + "/projects"): Rule("org", P.VIEW_PROJECT),
    ("POST", ORG + "/projects"): Rule("org", P.MANAGE_PROJECT),
    ("GET", PROJECT): Rule("org", P.VIEW_PROJECT),
    ("PUT", PROJECT): Rule("org", P.MANAGE_PROJECT),
    ("DELETE", PROJECT): Rule("org", P.MANAGE_PROJECT),
    ("GET", PROJECT + "/environments"): Rule("org", P.VIEW_ENVIRONMENT),
    ("POST", PROJECT + "/environments"): Rule("org", P.MANAGE_PROJECT),
    ("GET", ENV): Rule("org", P.VIEW_ENVIRONMENT),
    ("PUT", ENV): Rule("org", P.MANAGE_ENVIRONMENT),
    ("DELETE", ENV): Rule("org", P.MANAGE_PROJECT),
    ("GET", ORG + "/api-keys"): Rule("org", P.MANAGE_ORG_MEMBERSHIPS),
    ("POST", ORG + "/api-keys"): Rule("org", P.MANAGE_ORG_MEMBERSHIPS),
    ("DELETE", ORG + "/api-keys/{key_id:uuid}"): Rule("org", P.MANAGE_ORG_MEMBERSHIPS),
    ("GET", "/api/v1/tokens"): Rule("user"),
    ("POST", "/api/v1/tokens"): Rule("user"),
    ("DELETE", "/api/v1/tokens/{token_id:uuid}"): Rule("user"),
    ("POST", "/auth/login"): Rule("public"),
    ("POST", "/auth/logout"): Rule("session"),
    # OIDC login: the matrix's app has no issuer configured, so both answer 404
    # oidc_not_configured to anyone; the flow itself is in test_oidc.py.
    ("GET", "/auth/login"): Rule("public", answers=404),
    ("GET", "/auth/callback"): Rule("public", answers=404),
    ("GET", ORG + "/jobs"): Rule("org", P.VIEW_ORG),
    ("GET", JOB): Rule("org", P.VIEW_ORG),
    # Re-queueing a job is an operation at the organization's scope (commands/jobs.py).
    ("POST", JOB + "/retry"): Rule("org", P.OPERATE_PROJECT),
    ("POST", ENV + "/enrollment-tokens"): Rule("org", P.MANAGE_ENVIRONMENT),
    ("GET", ENV + "/enrollment-tokens"): Rule("org", P.MANAGE_ENVIRONMENT),
    ("DELETE", ENV + "/enrollment-tokens/{token_id:uuid}"): Rule("org", P.MANAGE_ENVIRONMENT),
    ("POST", ENV + "/agents"): Rule("enroll"),
    ("GET", ENV + "/agents"): Rule("org", P.VIEW_ENVIRONMENT),
    ("GET", AGENT): Rule("org", P.VIEW_ENVIRONMENT),
    ("DELETE", AGENT): Rule("org", P.MANAGE_ENVIRONMENT),
    ("POST", AGENT + "/keys/rotate"): Rule("agent_or_org", P.MANAGE_ENVIRONMENT),
    ("POST", "/api/v1/agents/{agent_id:uuid}/heartbeat"): Rule("agent"),
    # The agents' deployment protocol (commands/agent_deployments.py): own key only.
    ("GET", AGENT_SELF + "/deployments/current"): Rule("agent"),
    ("GET", AGENT_SELF + "/bundles/{deployment_id:uuid}"): Rule("agent"),
    ("POST", AGENT_SELF + "/deployments/{deployment_id:uuid}/status"): Rule("agent"),
    ("GET", AGENT_SELF + "/signing-keys"): Rule("agent"),
    # Drafts and versions: writes (and preview) need OperateProject, reads ViewProject.
    ("GET", PROJECT + "/drafts"): Rule("org", P.VIEW_PROJECT),
    ("POST", PROJECT + "/drafts"): Rule("org", P.OPERATE_PROJECT),
    ("GET", DRAFT): Rule("org", P.VIEW_PROJECT),
    ("PUT", DRAFT): Rule("org", P.OPERATE_PROJECT),
    ("DELETE", DRAFT): Rule("org", P.OPERATE_PROJECT),
    ("POST", DRAFT + "/preview"): Rule("org", P.OPERATE_PROJECT),
    ("POST", DRAFT + "/versions"): Rule("org", P.OPERATE_PROJECT),
    ("GET", PROJECT + "/versions"): Rule("org", P.VIEW_PROJECT),
    ("GET", VERSION): Rule("org", P.VIEW_PROJECT),
    ("GET", VERSION + "/spec.kv"): Rule("org", P.VIEW_PROJECT),
    # Config bundles: writes need OperateEnvironment, reads ViewEnvironment.
    ("GET", ENV + "/bundles"): Rule("org", P.VIEW_ENVIRONMENT),
    ("POST", ENV + "/bundles"): Rule("org", P.OPERATE_ENVIRONMENT),
    ("GET", BUNDLE): Rule("org", P.VIEW_ENVIRONMENT),
    ("PUT", BUNDLE): Rule("org", P.OPERATE_ENVIRONMENT),
    ("DELETE", BUNDLE): Rule("org", P.OPERATE_ENVIRONMENT),
    # Signing keys are org_admin work (ManageOrgMemberships); the key set is read by
    # ViewOrg holders and by the organization's agents.
    ("POST", SIGNING_KEYS): Rule("org", P.MANAGE_ORG_MEMBERSHIPS),
    ("GET", SIGNING_KEYS): Rule("org", P.MANAGE_ORG_MEMBERSHIPS),
    ("POST", SIGNING_KEY + "/rotate"): Rule("org", P.MANAGE_ORG_MEMBERSHIPS),
    ("POST", SIGNING_KEY + "/retire"): Rule("org", P.MANAGE_ORG_MEMBERSHIPS),
    ("GET", SIGNING_KEYS + "/key-set"): Rule("agent_or_org", P.VIEW_ORG),
    # Deployments and approvals: OperateEnvironment to act, ViewEnvironment to read.
    ("POST", ENV + "/deployments"): Rule("org", P.OPERATE_ENVIRONMENT),
    ("GET", ENV + "/deployments"): Rule("org", P.VIEW_ENVIRONMENT),
    ("GET", DEPLOYMENT): Rule("org", P.VIEW_ENVIRONMENT),
    ("POST", DEPLOYMENT + "/rollback"): Rule("org", P.OPERATE_ENVIRONMENT),
    ("GET", ENV + "/approvals"): Rule("org", P.VIEW_ENVIRONMENT),
    ("GET", APPROVAL): Rule("org", P.VIEW_ENVIRONMENT),
    ("POST", APPROVAL + "/approve"): Rule("org", P.OPERATE_ENVIRONMENT),
    ("POST", APPROVAL + "/deny"): Rule("org", P.OPERATE_ENVIRONMENT),
    ("POST", APPROVAL + "/revoke"): Rule("org", P.OPERATE_ENVIRONMENT),
}

# Cells where the application is known to disagree with DOMAIN.md:
# (method, template, principal name) → the status it answers. Empty: none found.
KNOWN_MISMATCHES: dict[tuple[str, str, str], int] = {}


@dataclass(frozen=True)
class Principal:
    name: str
    # "pat" | "session" | "api_key" | "agent" | "enrollment" | "none" | "invalid"
    family: str
    role: str | None = None  # its role in the organization under test
    foreign: bool = False  # a valid credential of another tenant
    email: str | None = None  # the user behind a user credential


def expected(rule: Rule, who: Principal) -> int | None:
    """The expected status: 401, 403 or 404, or None for "any 2xx"."""
    if rule.kind == "public":
        return rule.answers
    if who.family in ("none", "invalid"):
        return 401
    if who.family in ("agent", "enrollment"):
        if (rule.kind, who.family) in (
            ("enroll", "enrollment"),
            ("agent_or_org", "agent"),
            ("agent", "agent"),
        ):
            return 401 if who.foreign else None
        return 403
    if rule.kind in ("enroll", "agent"):
        return 403
    is_user = who.family in ("pat", "session")
    if rule.kind == "authenticated":
        return None
    if rule.kind == "user":
        return None if is_user else 403
    if rule.kind == "session":
        return None if who.family == "session" else 403
    assert rule.kind in ("org", "agent_or_org") and rule.perm is not None
    if who.foreign:
        return 404
    assert who.role is not None
    if who.family == "api_key" and rule.perm is P.MANAGE_ORG_MEMBERSHIPS:
        return 403
    return None if rule.perm in HOLDS[who.role] else 403


def app_routes(app) -> set[tuple[str, str]]:
    out = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        if not route.path.startswith(("/api/", "/auth/")):
            continue
        for method in route.methods:
            if method not in ("HEAD", "OPTIONS"):
                out.add((method, route.path))
    return out


def fill(template: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+):uuid\}", lambda m: ids[m.group(1)], template)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


_seq = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix} {next(_seq)}"


@pytest.fixture
async def client(pool, projector, s3):
    """The app with room in its rate limits (the matrix sends hundreds of requests,
    and the credential routes share the tight ``auth`` class)."""
    limits = RateLimits(default=100_000, auth=100_000, enrollment=100_000)
    app = create_app(
        pool,
        PgFeed(pool),
        rate_limits=limits,
        secret_cipher=deploy_world.make_cipher(pool),
        object_store=deploy_world.object_store(s3),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
    await app.state.object_store.close()


class World:
    """The organization under test, its members, credentials and fresh targets."""

    def __init__(self, client: httpx.AsyncClient, pool) -> None:
        self.client = client
        self.pool = pool
        self.store = PgEventStore(pool)
        self.codec = default_codec()
        self.tokens: dict[str, str] = {}  # principal name → bearer secret
        self.user_ids: dict[str, uuid.UUID] = {}  # email → user id
        self.principals: list[Principal] = []

    async def user(self, email: str, org_name: str):
        made = await create_user(
            self.pool, email=email, org_name=org_name, now=datetime.now(UTC), password=PASSWORD
        )
        self.user_ids[email] = made.user_id
        return made

    async def add_members(self, org_id: str, roles: dict[str, str]) -> None:
        """Append organization.member_added (there is no members route yet)."""
        stream = org_mod.stream_id(uuid.UUID(org_id))
        records = await self.store.read_stream(stream)
        version = records[-1].stream_version
        state = org_mod.fold(self.codec.decode_recorded(r) for r in records)
        events: list = []
        for email, role in roles.items():
            new = org_mod.add_member(state, self.user_ids[email], role)  # type: ignore[arg-type]
            for e in new:
                state = org_mod.evolve(state, e)
            events += new
        append = StreamAppend(
            stream_id=stream,
            stream_type=org_mod.STREAM_TYPE,
            expected_version=version,
            events=tuple(self.codec.encode(e) for e in events),
        )
        meta = Metadata(actor=SYSTEM, tenant_id=uuid.UUID(org_id), correlation_id=uuid.uuid4())
        await self.store.append([append], meta)

    async def call(self, method: str, path: str, auth: dict[str, str], body=None):
        return await self.client.request(method, path, json=body, headers=auth)

    async def ok(self, method: str, path: str, auth: dict[str, str], body=None) -> dict:
        r = await self.call(method, path, auth, body)
        assert r.is_success, (method, path, r.status_code, r.text)
        return r.json() if r.content else {}

    async def login(self, email: str) -> str:
        body = await self.ok("POST", "/auth/login", {}, {"email": email, "password": PASSWORD})
        return body["token"]

    async def api_key(self, org_id: str, role: str) -> dict:
        body = {"name": unique("key"), "role": role}
        return await self.ok("POST", f"/api/v1/orgs/{org_id}/api-keys", self.admin, body)

    async def setup(self) -> None:
        made = await self.user("admin@example.com", "Main Org")
        self.org = str(made.org_id)
        self.admin = bearer(made.token)
        for role in ROLES:
            email = f"{role}@example.com"
            member = await self.user(email, f"{role} home")
            self.tokens[f"{role}/pat"] = member.token
            self.principals.append(Principal(f"{role}/pat", "pat", role, email=email))
            self.tokens[f"{role}/session"] = await self.login(email)
            self.principals.append(Principal(f"{role}/session", "session", role, email=email))
            self.tokens[f"{role}/api_key"] = (await self.api_key(self.org, role))["key"]
            self.principals.append(Principal(f"{role}/api_key", "api_key", role))
        await self.add_members(self.org, {f"{r}@example.com": r for r in ROLES})

        # Another tenant: an org_admin of its own organization, with every credential.
        mallory = await self.user("mallory@example.com", "Other Org")
        other_org = str(mallory.org_id)
        self.tokens["foreign/pat"] = mallory.token
        self.tokens["foreign/session"] = await self.login("mallory@example.com")
        key = await self.ok(
            "POST",
            f"/api/v1/orgs/{other_org}/api-keys",
            bearer(mallory.token),
            {"name": "mallory key", "role": "org_admin"},
        )
        self.tokens["foreign/api_key"] = key["key"]
        email = "mallory@example.com"
        self.principals += [
            Principal("foreign/pat", "pat", "org_admin", foreign=True, email=email),
            Principal("foreign/session", "session", "org_admin", foreign=True, email=email),
            Principal("foreign/api_key", "api_key", "org_admin", foreign=True),
        ]

        # Credentials that authenticate nobody.
        revoked_pat = await self.ok("POST", "/api/v1/tokens", self.admin, {"name": "gone"})
        await self.ok("DELETE", f"/api/v1/tokens/{revoked_pat['id']}", self.admin)
        revoked_session = await self.login("admin@example.com")
        await self.ok("POST", "/auth/logout", bearer(revoked_session))
        revoked_key = await self.api_key(self.org, "org_admin")
        await self.ok("DELETE", f"/api/v1/orgs/{self.org}/api-keys/{revoked_key['id']}", self.admin)
        self.tokens |= {
            "revoked/pat": revoked_pat["token"],
            "revoked/session": revoked_session,
            "revoked/api_key": revoked_key["key"],
            "unknown/pat": "byp_" + "A" * 43,
            "unknown/api_key": "byo_" + "B" * 43,
            "malformed": "not a token at all",
        }
        self.principals.append(Principal("none", "none"))
        for name in ("revoked/pat", "revoked/session", "revoked/api_key"):
            self.principals.append(Principal(name, "invalid"))
        for name in ("unknown/pat", "unknown/api_key", "malformed"):
            self.principals.append(Principal(name, "invalid"))

        # The tree the non-destructive requests act on.
        self.ids = await self.tree(self.org)
        self.ids["key_id"] = str(uuid.uuid4())
        self.ids["token_id"] = str(uuid.uuid4())
        self.ids["job_id"] = await self.failed_job(self.org)

        # Agents and enrollment tokens: of the environment under test, of another
        # tenant's, and ones that authenticate nobody (used, revoked, unknown).
        used, agent = await self.agent()
        self.ids["agent_id"] = agent["agent_id"]
        self.tokens["agent"] = agent["api_key"]
        self.tokens["enrollment"] = (await self.enrollment_token())["token"]
        mallory_auth = bearer(mallory.token)
        elsewhere = await self.tree(other_org, mallory_auth)
        self.tokens["foreign/agent"] = (await self.agent(elsewhere, mallory_auth))[1]["api_key"]
        foreign_enrollment = await self.enrollment_token(elsewhere, mallory_auth)
        self.tokens["foreign/enrollment"] = foreign_enrollment["token"]
        _, gone = await self.agent()
        await self.ok("DELETE", fill(AGENT, {**self.ids, "agent_id": gone["agent_id"]}), self.admin)
        self.tokens |= {
            "used/enrollment": used,
            "revoked/agent": gone["api_key"],
            "unknown/enrollment": "bye_" + "C" * 43,
            "unknown/agent": "bya_" + "D" * 43,
        }
        self.principals += [
            Principal("agent", "agent"),
            Principal("enrollment", "enrollment"),
            Principal("foreign/agent", "agent", foreign=True),
            Principal("foreign/enrollment", "enrollment", foreign=True),
        ]
        for name in ("used/enrollment", "revoked/agent", "unknown/enrollment", "unknown/agent"):
            self.principals.append(Principal(name, "invalid"))
        self.ids["draft_id"], self.ids["version_id"] = await self.versioned_draft()
        self.ids["bundle_id"] = await self.bundle()
        await self.deploy_setup()

        # Queries read projections: wait until they include every write above.
        head = await self.pool.fetchval("SELECT max(position) FROM events")
        assert await wait_for_position(self.pool, PgFeed(self.pool), TENANCY, head, 10.0)
        assert await wait_for_position(self.pool, PgFeed(self.pool), DRAFTS, head, 10.0)
        assert await wait_for_position(self.pool, PgFeed(self.pool), CONFIG_BUNDLES, head, 10.0)
        assert await wait_for_position(self.pool, PgFeed(self.pool), DEPLOYMENTS, head, 10.0)

    async def failed_job(self, org_id: str) -> str:
        """A failed job of the organization, in the job index (the projection is
        applied here directly: the matrix's projector runs the tenancy one only)."""
        job_id = uuid.uuid4()
        events = list(job_mod.queue(None, job_id=job_id, job_type="matrix", max_attempts=1))
        events += job_mod.start(job_mod.fold(events), 1)
        events += job_mod.fail_permanent(job_mod.fold(events), 1, "Broken", "always")
        append = StreamAppend(
            stream_id=job_mod.stream_id(job_id),
            stream_type=job_mod.STREAM_TYPE,
            expected_version=0,
            events=tuple(self.codec.encode(e) for e in events),
        )
        meta = Metadata(actor=SYSTEM, tenant_id=uuid.UUID(org_id), correlation_id=uuid.uuid4())
        await self.store.append([append], meta)
        projection = JobIndexProjection()
        async with self.pool.acquire() as conn:
            for record in await self.store.read_stream(job_mod.stream_id(job_id)):
                await projection.apply(conn, record)
        return str(job_id)

    async def draft(self) -> str:
        """A new draft in the project under test (its spec_ingest job is not run)."""
        path = fill(PROJECT + "/drafts", self.ids)
        body = {"name": unique("draft"), "target": "SingleRing", "spec_kv": SPEC_KV}
        return str((await self.ok("POST", path, self.admin, body))["id"])

    def bundle_body(self) -> dict:
        """A config bundle of the version under test (no inline secret: the matrix's
        app has no master key)."""
        return {
            "version_id": self.ids["version_id"],
            "tuning": {"profile": "default"},
            "parameters": {"run": unique("run")},
        }

    async def bundle(self) -> str:
        path = fill(ENV + "/bundles", self.ids)
        return str((await self.ok("POST", path, self.admin, self.bundle_body()))["id"])

    async def versioned_draft(self) -> tuple[str, str]:
        """A draft validated (the spec_ingest handler called directly) with a version."""
        draft_id = await self.draft()
        handler = SpecIngest(self.store)
        ctx = JobContext(
            job_id=uuid.uuid4(),
            job_type="spec_ingest",
            payload={"draft_id": draft_id, "revision": 1},
            attempt=1,
            max_attempts=1,
            generation=0,
            tenant_id=None,
        )
        assert (await handler(ctx) or {})["outcome"] == "valid"
        path = fill(DRAFT + "/versions", {**self.ids, "draft_id": draft_id})
        version = await self.ok("POST", path, self.admin)
        return draft_id, str(version["id"])

    async def tree(self, org_id: str, auth: dict[str, str] | None = None) -> dict[str, str]:
        base = f"/api/v1/orgs/{org_id}/projects"
        auth = auth or self.admin
        project = await self.ok("POST", base, auth, {"name": unique("P")})
        env = await self.ok(
            "POST",
            f"{base}/{project['id']}/environments",
            auth,
            {"name": unique("env"), "posture": "dev"},
        )
        return {"org_id": org_id, "project_id": project["id"], "env_id": env["id"]}

    async def enrollment_token(
        self, ids: dict[str, str] | None = None, auth: dict[str, str] | None = None
    ) -> dict:
        path = fill(ENV + "/enrollment-tokens", ids or self.ids)
        return await self.ok("POST", path, auth or self.admin, {"name": unique("enroll")})

    async def agent(self, ids: dict[str, str] | None = None, auth: dict[str, str] | None = None):
        """A new agent of the environment ``ids`` names (default: the one under test)."""
        token = (await self.enrollment_token(ids, auth))["token"]
        path = fill(ENV + "/agents", ids or self.ids)
        return token, await self.ok("POST", path, bearer(token), {"name": unique("agent")})

    def auth(self, who: Principal) -> dict[str, str]:
        if who.family == "none":
            return {}
        return bearer(self.tokens[who.name])

    async def request_for(
        self, method: str, template: str, who: Principal, allowed: bool
    ) -> tuple[str, dict[str, str], dict | None]:
        """The request of one cell: path, headers, body. Destructive requests get a
        fresh target when they are expected to succeed."""
        ids = dict(self.ids)
        auth = self.auth(who)
        body: dict | None = None
        key = (method, template)
        if template.startswith(SIGNING_KEYS) or template.startswith(
            (ENV + "/deployments", ENV + "/approvals")
        ):
            return await self.deploy_request(method, template, who, allowed, ids, auth)
        if key == ("POST", "/api/v1/orgs"):
            body = {"name": unique("Org")}
        elif key == ("PUT", ORG):
            body = {"name": unique("Main Org")}
        elif key == ("POST", ORG + "/projects"):
            body = {"name": unique("P")}
        elif key == ("PUT", PROJECT):
            body = {"description": unique("d")}
        elif key == ("POST", PROJECT + "/environments"):
            body = {"name": unique("env"), "posture": "dev"}
        elif key == ("PUT", ENV):
            body = {"name": unique("env")}
        elif key == ("POST", ORG + "/api-keys"):
            body = {"name": unique("key"), "role": "viewer"}
        elif key == ("POST", "/api/v1/tokens"):
            body = {"name": unique("tok")}
        elif key == ("POST", PROJECT + "/drafts"):
            body = {"name": unique("draft"), "target": "SingleRing", "spec_kv": SPEC_KV}
        elif key == ("PUT", DRAFT):
            body = {"name": unique("draft")}
        elif key == ("POST", ENV + "/bundles"):
            body = self.bundle_body()
        elif key == ("PUT", BUNDLE):
            body = {k: v for k, v in self.bundle_body().items() if k != "version_id"}
        elif key == ("DELETE", BUNDLE) and allowed:
            ids["bundle_id"] = await self.bundle()
        elif key == ("DELETE", DRAFT) and allowed:
            ids["draft_id"] = await self.draft()
        elif key == ("POST", ENV + "/enrollment-tokens"):
            body = {"name": unique("enroll")}
        elif key == ("POST", ENV + "/agents"):
            body = {"name": unique("agent")}
            if allowed:
                auth = bearer((await self.enrollment_token())["token"])
        elif key == ("DELETE", ENV + "/enrollment-tokens/{token_id:uuid}") and allowed:
            ids["token_id"] = (await self.enrollment_token())["id"]
        elif key == ("DELETE", AGENT) and allowed:
            ids["agent_id"] = (await self.agent())[1]["agent_id"]
        elif key == ("POST", AGENT + "/keys/rotate") and allowed:
            _, fresh = await self.agent()
            ids["agent_id"] = fresh["agent_id"]
            if who.family == "agent":
                auth = bearer(fresh["api_key"])
        elif template.startswith(AGENT_SELF + "/") and "{deployment_id:uuid}" in template:
            ids["deployment_id"] = self.ids["agent_deployment_id"]
            if method == "POST":
                body = {"state": "activated"}
        elif key == ("POST", "/api/v1/agents/{agent_id:uuid}/heartbeat"):
            body = {"runtime_version": "1.0.0"}
        elif key == ("POST", "/auth/login"):
            body = {"email": "viewer@example.com", "password": PASSWORD}
        elif key == ("DELETE", ORG) and allowed:
            ids["org_id"], auth = await self.fresh_org_for(who)
        elif key == ("DELETE", PROJECT) and allowed:
            ids = await self.tree(self.org)
        elif key == ("DELETE", ENV) and allowed:
            fresh = await self.tree(self.org)
            ids["env_id"] = fresh["env_id"]
            ids["project_id"] = fresh["project_id"]
        elif key == ("DELETE", ORG + "/api-keys/{key_id:uuid}") and allowed:
            ids["key_id"] = (await self.api_key(self.org, "viewer"))["id"]
        elif key == ("DELETE", "/api/v1/tokens/{token_id:uuid}") and allowed:
            # A user revokes one of its own tokens: issue it with the same credential.
            mine = await self.ok("POST", "/api/v1/tokens", auth, {"name": unique("tok")})
            ids["token_id"] = mine["id"]
        elif key == ("POST", JOB + "/retry") and allowed:
            ids["job_id"] = await self.failed_job(self.org)
        elif key == ("POST", "/auth/logout") and allowed:
            assert who.email is not None
            auth = bearer(await self.login(who.email))
        return fill(template, ids), auth, body

    async def fresh_org_for(self, who: Principal) -> tuple[str, dict[str, str]]:
        """A new organization in which ``who`` stands exactly as in the one under
        test (same role; an API key: a new key of that role there)."""
        made = await self.ok("POST", "/api/v1/orgs", self.admin, {"name": unique("Doomed")})
        org_id = made["id"]
        assert who.role is not None
        if who.family == "api_key":
            key = await self.ok(
                "POST",
                f"/api/v1/orgs/{org_id}/api-keys",
                self.admin,
                {"name": unique("key"), "role": who.role},
            )
            return org_id, bearer(key["key"])
        assert who.email is not None
        await self.add_members(org_id, {who.email: who.role})
        return org_id, self.auth(who)

    # --- signing keys, deployments and approvals -------------------------------------

    async def deploy_setup(self) -> None:
        """A signing key; a dev environment for deployments and rollbacks and a prod one
        for approvals, each with an agent, a bundle and room for every cell."""
        self.ids["signing_key_id"] = (await self.signing_key())["id"]
        self.dev = await deploy_world.tree(self.client, self.admin, self.org, "dev", cap=100)
        self.prod = await deploy_world.tree(self.client, self.admin, self.org, "prod", cap=100)
        for env in (self.dev, self.prod):
            await deploy_world.agent(self.client, self.admin, env)
            env["bundle"] = await deploy_world.bundle(self.pool, env)
        self.ids["deployment_id"] = (await self.deployment(self.dev))["id"]
        self.ids["approval_id"] = (await self.deployment(self.prod))["approval_id"]
        self.ids["agent_deployment_id"] = await deploy_world.deploying(
            self.client, self.pool, self.admin, self.ids
        )

    async def signing_key(self) -> dict:
        return await self.ok("POST", fill(SIGNING_KEYS, self.ids), self.admin, {"name": "k"})

    async def deployment(self, env: dict[str, str]) -> dict:
        """A new deployment requested by the admin (so any other principal may decide)."""
        body = {"bundle_id": env["bundle"]}
        return await self.ok("POST", fill(ENV + "/deployments", env), self.admin, body)

    async def rolled_back_target(self) -> str:
        """An active deployment that superseded another: one that can be rolled back."""
        old = await self.deployment(self.dev)
        await deploy_world.activate(self.pool, old["id"], self.org)
        new = await self.deployment(self.dev)
        await deploy_world.activate(self.pool, new["id"], self.org, replacing=old["id"])
        await deploy_world.settled(self.pool)
        return str(new["id"])

    async def deploy_request(
        self,
        method: str,
        template: str,
        who: Principal,
        allowed: bool,
        ids: dict[str, str],
        auth: dict[str, str],
    ) -> tuple[str, dict[str, str], dict | None]:
        key = (method, template)
        body: dict | None = None
        if template.startswith(ENV + "/deployments"):
            ids |= {k: self.dev[k] for k in ("project_id", "env_id")}
        elif template.startswith(ENV + "/approvals"):
            ids |= {k: self.prod[k] for k in ("project_id", "env_id")}
        if key == ("POST", SIGNING_KEYS):
            body = {"name": unique("key")}
        elif key in (("POST", SIGNING_KEY + "/rotate"), ("POST", SIGNING_KEY + "/retire")):
            if allowed:
                ids["signing_key_id"] = (await self.signing_key())["id"]
        elif key == ("GET", SIGNING_KEYS + "/key-set") and who.family == "agent":
            auth = bearer(self.tokens[who.name])
        elif key == ("POST", ENV + "/deployments"):
            body = {"bundle_id": self.dev["bundle"]}
        elif key == ("POST", DEPLOYMENT + "/rollback") and allowed:
            ids["deployment_id"] = await self.rolled_back_target()
        elif method == "POST" and template.startswith(APPROVAL) and allowed:
            ids["approval_id"] = (await self.deployment(self.prod))["approval_id"]
        return fill(template, ids), auth, body


async def test_every_route_has_exactly_one_entry(client) -> None:
    """A new route without an entry fails here, and so does an entry for a removed route."""
    routes = app_routes(client._transport.app)
    assert routes - TABLE.keys() == set(), "routes without an entry in TABLE"
    assert TABLE.keys() - routes == set(), "TABLE entries for routes that do not exist"


async def test_authorization_matrix(client, pool) -> None:
    assert app_routes(client._transport.app) == TABLE.keys()

    world = World(client, pool)
    await world.setup()
    assert len(world.principals) == 4 * 3 + 3 + 7 + 8

    mismatches: list[str] = []
    cells = 0
    # DELETE of the organization under test would end the matrix early if it ever
    # wrongly succeeded: run those cells last.
    order = sorted(TABLE, key=lambda k: (k == ("DELETE", ORG), k))
    for method, template in order:
        rule = TABLE[(method, template)]
        for who in world.principals:
            want = expected(rule, who)
            path, auth, body = await world.request_for(method, template, who, want is None)
            r = await world.call(method, path, auth, body)
            cells += 1
            got = r.status_code
            known = KNOWN_MISMATCHES.get((method, template, who.name))
            if known is not None:
                if got != known:
                    mismatches.append(
                        f"{method} {template} as {who.name}: known {known}, got {got}"
                    )
                continue
            good = (200 <= got < 300) if want is None else got == want
            if not good:
                mismatches.append(
                    f"{method} {template} as {who.name}: expected {want or '2xx'}, "
                    f"got {got} {r.text[:200]}"
                )
    assert cells == len(TABLE) * len(world.principals)
    assert not mismatches, "\n".join(mismatches)
