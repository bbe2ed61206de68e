"""Query routes for an organization's jobs. They read only read tables
(``job_index`` and ``job_attempts``, kept by ``projections/jobs.py``).

Visibility is the organization's (``ViewOrg``): a job belongs to the tenant
whose id its ``job.queued`` envelope carries; a job of another tenant (or of
none, a system job) is 404, exactly like one that does not exist.
``?min_position=N`` waits (bounded) until the job projection has applied N.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.params import FromPath, QueryParameter

from domain import job as job_mod
from domain.access import Permission
from domain.errors import FieldError, InvalidInput
from domain.paging import Page
from projections.jobs import NAME
from projections.routes import ORG
from projections.rows import Cursor, Limit, fetch_one, fetch_page, keyset
from projections.scope import AnyRequest, MinPosition, ReadModel

JOBS = ORG + "/jobs"
JOB_INDEX = ReadModel(NAME, "the job index")

# ``state`` is a reserved handler argument in Litestar: the Python names differ.
StateFilter = Annotated[
    str | None,
    QueryParameter(
        name="state", description="Only jobs in this state: " + ", ".join(job_mod.STATUSES)
    ),
]
TypeFilter = Annotated[
    str | None, QueryParameter(name="type", description="Only jobs of this type")
]


class JobView(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    org_id: uuid.UUID | None
    type: str
    state: str
    generation: int
    revision: int
    due_at: datetime | None
    created_at: datetime
    updated_at: datetime


class AttemptView(msgspec.Struct, kw_only=True):
    generation: int
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    error_class: str | None
    error_message: str | None


class JobDetailView(JobView, kw_only=True):
    attempts: list[AttemptView]


def job_from_row(row: Any) -> JobView:
    return JobView(
        id=row["id"],
        org_id=row["org_id"],
        type=row["job_type"],
        state=row["status"],
        generation=row["generation"],
        revision=row["version"],
        due_at=row["due_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def attempt_from_row(row: Any) -> AttemptView:
    return AttemptView(
        generation=row["generation"],
        attempt=row["attempt"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        outcome=row["outcome"],
        error_class=row["error_class"],
        error_message=row["error_message"],
    )


def _check_state(state: str | None) -> None:
    if state is not None and state not in job_mod.STATUSES:
        raise InvalidInput(
            f"unknown job state {state!r}",
            code="invalid_job_state",
            errors=(FieldError("query.state", "one of " + ", ".join(job_mod.STATUSES)),),
        )


@get(JOBS, summary="Jobs of an organization")
async def list_jobs(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    job_state: StateFilter = None,
    job_type: TypeFilter = None,
    min_position: MinPosition = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Page[JobView]:
    _check_state(job_state)
    pool = await JOB_INDEX.ready_for_org(request, org_id, Permission.VIEW_ORG, min_position)
    return await fetch_page(
        pool,
        keyset(limit, cursor),
        """
        SELECT job_id AS id, * FROM job_index
        WHERE org_id = $1
          AND ($2::text IS NULL OR status = $2)
          AND ($3::text IS NULL OR job_type = $3)
        """,
        org_id,
        job_state,
        job_type,
        build=job_from_row,
        key="created_at, job_id",
    )


@get(JOBS + "/{job_id:uuid}", summary="A job with its attempt history")
async def get_job(
    request: AnyRequest,
    org_id: FromPath[uuid.UUID],
    job_id: FromPath[uuid.UUID],
    min_position: MinPosition = None,
) -> JobDetailView:
    pool = await JOB_INDEX.ready_for_org(request, org_id, Permission.VIEW_ORG, min_position)
    row = await fetch_one(
        pool,
        "job",
        "job_not_found",
        "SELECT job_id AS id, * FROM job_index WHERE job_id = $1 AND org_id = $2",
        job_id,
        org_id,
    )
    attempts = await pool.fetch(
        "SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY generation, attempt", job_id
    )
    view = job_from_row(row)
    return JobDetailView(
        **msgspec.structs.asdict(view), attempts=[attempt_from_row(a) for a in attempts]
    )


ROUTES = [list_jobs, get_job]
