"""Write routes for an organization's jobs: an operator re-queues a finished job.

``POST /api/v1/orgs/{org}/jobs/{job}/retry`` runs a ``dead_letter`` or ``failed``
job again as a new generation (``domain.job.requeue``): ``job.requeued`` is
appended with the caller as the envelope's actor (the audit log) and ``by``,
at the job stream's version (a concurrent change re-runs the decision, then
409); the relay republishes it to ``jobs.<type>``. Any other state is 409
``job_illegal_transition``.

Permission: ``OperateProject`` checked at the organization's scope. Jobs are
an organization's (its ``job.queued`` envelope's tenant), not a project's, and
re-running one is an operation, not management: org_admin, project_admin and
operator may; viewers may not (403). A job of another tenant is 404, like one
that does not exist. ``If-Match`` (the job's revision) is honoured.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.params import FromPath

from commands.execution import Outcome, check_if_match, deps_of, etag_of, execute
from commands.tenancy import ORG, authorize, load_org
from domain import job as job_mod
from domain.access import Permission
from domain.errors import NotFound
from domain.principal import Principal

AnyRequest = Request[Principal, Any, State]
JOB = ORG + "/jobs/{job_id:uuid}"


class RequeuedJobView(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID
    type: str
    state: str
    generation: int
    revision: int


@post(JOB + "/retry", status_code=200, summary="Re-queue a dead-lettered or failed job")
async def retry_job(
    request: AnyRequest, org_id: FromPath[uuid.UUID], job_id: FromPath[uuid.UUID]
) -> Response[bytes]:
    deps = deps_of(request)
    principal = request.user

    async def decide(now: datetime) -> Outcome:
        org = await load_org(deps, org_id)
        authorize(principal, org.state, Permission.OPERATE_PROJECT)
        records = await deps.store.read_stream(job_mod.stream_id(job_id))
        if not records or records[0].tenant_id != org_id:
            raise NotFound("job not found", code="job_not_found")
        state = job_mod.fold(deps.codec.decode_recorded(r) for r in records)
        version = records[-1].stream_version
        check_if_match(request, version)
        job, append = job_mod.requeue_append(state, version, by=principal.actor.id)
        return Outcome(
            appends=[append],
            tenant_id=org_id,
            status_code=200,
            body=RequeuedJobView(
                id=job.id,
                org_id=org_id,
                type=job.job_type,
                state=job.status,
                generation=job.generation,
                revision=job.version,
            ),
            etag=etag_of(job.version),
        )

    return await execute(request, deps, decide)


ROUTES = [retry_job]
