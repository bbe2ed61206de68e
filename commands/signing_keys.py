"""An organization's Ed25519 signing keys over HTTP (DOMAIN.md §5, decision 0010).

    POST /api/v1/orgs/{org}/signing-keys                {name} → 201, public parts only
    GET  /api/v1/orgs/{org}/signing-keys                every key, retired ones included
    POST /api/v1/orgs/{org}/signing-keys/{key}/rotate   {name?} → 201, the new active key;
                                                        the old one is ``retiring``
    POST /api/v1/orgs/{org}/signing-keys/{key}/retire   → 200, ``retired``
    GET  /api/v1/orgs/{org}/signing-keys/key-set        the key set JSON agents verify with

Managing keys needs ManageOrgMemberships; the key set is public material and is
served to ViewOrg holders and to the organization's agents (their ``bya_`` key;
an agent of another organization answers 401, as on every agent route).

The private key is generated here and stored only as AES-256-GCM ciphertext
under the organization's data key (``SecretCipher``), bound to the key's id, in
``signing_keys``; that row is written in the transaction of the key's event,
so the list is current on return. Events carry the kid, the public key and the
validity window, for audit. ``active_signer`` is how approvals sign.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from litestar import Response, get, post
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath

from commands.execution import deps_of, load, stream_append
from commands.families import AGENT_OR_HUMAN, CREDENTIALS
from commands.identity import AnyRequest, Written, commit, pool_of
from commands.request_schemas import json_body
from commands.secret_keys import SecretCipher
from commands.tenancy import ORG, authorize, load_org
from domain import signing_key as key_mod
from domain.access import Permission
from domain.codec import decode_command
from domain.credential import key_set_json
from domain.errors import Conflict, DomainError
from schema.pg import AnyPool, Connection

KEYS = ORG + "/signing-keys"
KEY = KEYS + "/{signing_key_id:uuid}"
KID_PREFIX = "ed25519-"


class Links(msgspec.Struct, frozen=True, kw_only=True):
    self: str
    key_set: str


class SigningKeyView(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    kid: str
    alg: Literal["EdDSA"] = "EdDSA"
    crv: Literal["Ed25519"] = "Ed25519"
    public_key: str  # base64url, as ``x`` in the key set
    status: key_mod.Status
    not_before: datetime
    not_after: datetime | None
    replaced_by: uuid.UUID | None
    revision: int
    created_at: datetime
    updated_at: datetime
    links: Links


class SigningKeyList(msgspec.Struct, frozen=True, kw_only=True):
    """Every key of the organization in one page (an organization has a handful)."""

    items: list[SigningKeyView]
    next_cursor: str | None = None


class NoActiveSigningKey(Conflict):
    code = "signing_key_missing"


class SigningUnavailable(DomainError):
    status = 503
    code = "signing_keys_unavailable"


def cipher_of(request: AnyRequest) -> SecretCipher:
    cipher: SecretCipher | None = request.app.state.secret_cipher
    if cipher is None:
        raise SigningUnavailable(
            "signing keys cannot be stored or used: no master key is configured "
            "(BYTEOR_CLOUD_MASTER_KEYS)"
        )
    return cipher


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _view(row: Any) -> SigningKeyView:
    base = f"/api/v1/orgs/{row['org_id']}/signing-keys"
    return SigningKeyView(
        id=row["id"],
        org_id=row["org_id"],
        name=row["name"],
        kid=row["kid"],
        public_key=_b64(bytes(row["public_key"])),
        status=row["status"],
        not_before=row["not_before"],
        not_after=row["not_after"],
        replaced_by=row["replaced_by"],
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        links=Links(self=f"{base}/{row['id']}", key_set=f"{base}/key-set"),
    )


_COLUMNS = (
    "id, org_id, name, kid, public_key, status, not_before, not_after, replaced_by, "
    "revision, created_at, updated_at"
)


def _context(key_id: uuid.UUID) -> str:
    # Associated data: the ciphertext decrypts as this key's private key only.
    return f"signing-keys/{key_id}/private"


async def _new_key(
    conn: Connection,
    cipher: SecretCipher,
    *,
    org_id: uuid.UUID,
    key_id: uuid.UUID,
    name: str,
    now: datetime,
    replaces: uuid.UUID | None = None,
) -> tuple[key_mod.SigningKeyEvent, ...]:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = KID_PREFIX + hashlib.sha256(public).hexdigest()[:24]
    events = key_mod.create_key(
        key_id=key_id,
        org_id=org_id,
        name=name,
        kid=kid,
        public_key=public,
        now=now,
        replaces=replaces,
    )
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    sealed = await cipher.encrypt(org_id, raw, _context(key_id))
    created = events[0]
    assert isinstance(created, key_mod.SigningKeyCreated)
    await conn.execute(
        """
        INSERT INTO signing_keys (id, org_id, name, kid, public_key, status, not_before,
            private_key_ref, data_key_id, revision, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, 1, $9, $9)
        """,
        key_id,
        org_id,
        name,
        kid,
        public,
        created.not_before,
        sealed.ciphertext,
        sealed.key_id,
        now,
    )
    return events


async def _set_status(conn: Connection, state: key_mod.SigningKeyState, now: datetime) -> None:
    await conn.execute(
        """
        UPDATE signing_keys SET status = $2, not_after = $3, replaced_by = $4, revision = $5,
            updated_at = $6
        WHERE id = $1
        """,
        state.id,
        state.status,
        state.not_after,
        state.replaced_by,
        state.version,
        now,
    )


async def _row(conn: Connection, key_id: uuid.UUID) -> Any:
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM signing_keys WHERE id = $1", key_id)


@post(
    KEYS,
    status_code=201,
    summary="Create an Ed25519 signing key (the private key never leaves the server)",
    operation_class=json_body(key_mod.CreateSigningKey),
)
async def create_signing_key(request: AnyRequest, org_id: FromPath[uuid.UUID]) -> Response[bytes]:
    deps = deps_of(request)
    cmd = decode_command(key_mod.CreateSigningKey, await request.body())
    key_id = deps.new_id()

    async def build(conn: Connection, now: datetime) -> Written:
        org = await load_org(deps, org_id)
        authorize(request.user, org.state, Permission.MANAGE_ORG_MEMBERSHIPS)
        cipher = cipher_of(request)
        events = await _new_key(conn, cipher, org_id=org_id, key_id=key_id, name=cmd.name, now=now)
        return Written(
            appends=stream_append(deps, key_mod.stream_id(key_id), key_mod.STREAM_TYPE, 0, events),
            tenant_id=org_id,
            status_code=201,
            body=_view(await _row(conn, key_id)),
        )

    return await commit(request, build)


@get(KEYS, summary="The organization's signing keys: public parts and status only")
async def list_signing_keys(request: AnyRequest, org_id: FromPath[uuid.UUID]) -> SigningKeyList:
    deps = deps_of(request)
    org = await load_org(deps, org_id)
    authorize(request.user, org.state, Permission.MANAGE_ORG_MEMBERSHIPS)
    rows = await pool_of(request).fetch(
        f"SELECT {_COLUMNS} FROM signing_keys WHERE org_id = $1 ORDER BY created_at, id", org_id
    )
    return SigningKeyList(items=[_view(r) for r in rows])


async def _change(
    request: AnyRequest,
    org_id: uuid.UUID,
    key_id: uuid.UUID,
    decide: Callable[
        [Connection, key_mod.SigningKeyState, datetime],
        Any,
    ],
    status_code: int,
) -> Response[bytes]:
    deps = deps_of(request)

    async def build(conn: Connection, now: datetime) -> Written:
        org = await load_org(deps, org_id)
        authorize(request.user, org.state, Permission.MANAGE_ORG_MEMBERSHIPS)
        # Serializes changes to one key (its row), so two rotations cannot both win.
        await conn.execute("SELECT 1 FROM signing_keys WHERE id = $1 FOR UPDATE", key_id)
        loaded = await load(deps, key_mod.stream_id(key_id), key_mod.fold)
        state = key_mod.require_key(loaded.state, org_id)
        appends, shown = await decide(conn, state, now)
        old_events = appends[0]
        new_state = state
        for event in old_events:
            new_state = key_mod.evolve(new_state, event)
        if old_events:
            await _set_status(conn, new_state, now)
        out = stream_append(
            deps, loaded.stream_id, key_mod.STREAM_TYPE, loaded.version, old_events
        ) + list(appends[1])
        return Written(
            appends=out,
            tenant_id=org_id,
            status_code=status_code,
            body=_view(await _row(conn, shown or key_id)),
        )

    return await commit(request, build)


@post(
    KEY + "/rotate",
    status_code=201,
    summary="Rotate: a new active key; the old one verifies until retired (retiring)",
    operation_class=json_body(key_mod.RotateSigningKey, required=False),
)
async def rotate_signing_key(
    request: AnyRequest, org_id: FromPath[uuid.UUID], signing_key_id: FromPath[uuid.UUID]
) -> Response[bytes]:
    deps = deps_of(request)
    body = await request.body()
    cmd = (
        decode_command(key_mod.RotateSigningKey, body)
        if body.strip()
        else key_mod.RotateSigningKey()
    )
    new_id = deps.new_id()

    async def decide(conn: Connection, state: key_mod.SigningKeyState, now: datetime) -> Any:
        old = key_mod.rotate_out(state, replaced_by=new_id, now=now)
        created = await _new_key(
            conn,
            cipher_of(request),
            org_id=org_id,
            key_id=new_id,
            name=cmd.name or state.name,
            now=now,
            replaces=state.id,
        )
        new = stream_append(deps, key_mod.stream_id(new_id), key_mod.STREAM_TYPE, 0, created)
        return (old, new), new_id

    return await _change(request, org_id, signing_key_id, decide, 201)


@post(KEY + "/retire", status_code=200, summary="Retire a key: it signs nothing from now on")
async def retire_signing_key(
    request: AnyRequest, org_id: FromPath[uuid.UUID], signing_key_id: FromPath[uuid.UUID]
) -> Response[bytes]:
    await request.body()  # takes no body, but an oversized one is still a 413

    async def decide(conn: Connection, state: key_mod.SigningKeyState, now: datetime) -> Any:
        return (key_mod.retire(state, now=now), []), None

    return await _change(request, org_id, signing_key_id, decide, 200)


@get(
    KEYS + "/key-set",
    summary="The key set JSON (DOMAIN.md §5) agents verify approval credentials with",
    opt={CREDENTIALS: AGENT_OR_HUMAN},
)
async def key_set(request: AnyRequest, org_id: FromPath[uuid.UUID]) -> Response[bytes]:
    principal = request.user
    deps = deps_of(request)
    if principal.kind == "agent":
        if principal.org_id != org_id:
            raise NotAuthorizedException("this agent key is not valid for this organization")
    else:
        org = await load_org(deps, org_id)
        authorize(principal, org.state, Permission.VIEW_ORG)
    body = await key_set_bytes(pool_of(request), org_id)
    return Response(content=body, media_type="application/json")


async def key_set_bytes(pool: AnyPool, org_id: uuid.UUID) -> bytes:
    """``signing_keys.json`` of the organization: every key it ever had, by kid."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM signing_keys WHERE org_id = $1", org_id)
    return key_set_json(key_mod.public_key_of(_state(r)) for r in rows)


def _state(row: Any) -> key_mod.SigningKeyState:
    return key_mod.SigningKeyState(
        id=row["id"],
        org_id=row["org_id"],
        name=row["name"],
        kid=row["kid"],
        public_key=bytes(row["public_key"]),
        status=row["status"],
        not_before=row["not_before"],
        not_after=row["not_after"],
        replaced_by=row["replaced_by"],
        version=row["revision"],
    )


async def active_signer(
    conn: Connection, cipher: SecretCipher, org_id: uuid.UUID
) -> tuple[str, Callable[[bytes], bytes]]:
    """The kid and ``sign`` of the organization's newest active key (409 if it has none)."""
    row = await conn.fetchrow(
        """
        SELECT id, kid, private_key_ref, data_key_id FROM signing_keys
        WHERE org_id = $1 AND status = 'active'
        ORDER BY created_at DESC, id DESC LIMIT 1
        """,
        org_id,
    )
    if row is None:
        raise NoActiveSigningKey(
            "the organization has no active signing key; create one first",
            context={"org_id": str(org_id)},
        )
    raw = await cipher.decrypt(
        org_id, row["data_key_id"], row["private_key_ref"], _context(row["id"])
    )
    private = Ed25519PrivateKey.from_private_bytes(raw)
    return row["kid"], private.sign


ROUTES = [
    create_signing_key,
    list_signing_keys,
    rotate_signing_key,
    retire_signing_key,
    key_set,
]
