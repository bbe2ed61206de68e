-- Read table of the job index projection (projections/jobs.py): one row per
-- job, its status, generation and when it is due to run (queued: when queued
-- or its not_before; retrying: when the retry delay ends; otherwise NULL).
-- The reconciler (workers/reconciler.py) reads the overdue rows from it.
-- `version` is the job stream's version last applied: updates are idempotent.
CREATE TABLE job_index (
    job_id      uuid        PRIMARY KEY,
    job_type    text        NOT NULL,
    status      text        NOT NULL,
    generation  integer     NOT NULL,
    version     integer     NOT NULL,
    due_at      timestamptz,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX job_index_due_idx ON job_index (due_at)
    WHERE status IN ('queued', 'retrying');

GRANT SELECT, INSERT, UPDATE, DELETE ON job_index TO byteor_app;
