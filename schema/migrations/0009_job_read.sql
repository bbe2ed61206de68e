-- Operators' view of jobs (projections/jobs.py, projections/job_routes.py):
-- the tenant a job belongs to (the envelope's tenant_id of its job.queued
-- event; NULL for system jobs), when it was queued, and one row per attempt.
ALTER TABLE job_index ADD COLUMN org_id uuid;
ALTER TABLE job_index ADD COLUMN created_at timestamptz;
UPDATE job_index SET created_at = updated_at WHERE created_at IS NULL;
ALTER TABLE job_index ALTER COLUMN created_at SET NOT NULL;
CREATE INDEX job_index_org_idx ON job_index (org_id, created_at, job_id);

-- One row per attempt of a job (a generation restarts attempts at 1).
-- started_at is NULL for an attempt dead-lettered without a recorded start;
-- finished_at/outcome are NULL while it runs (or if its worker died and the
-- message was redelivered as the next attempt).
CREATE TABLE job_attempts (
    job_id        uuid        NOT NULL,
    generation    integer     NOT NULL,
    attempt       integer     NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz,
    outcome       text,
    error_class   text,
    error_message text,
    PRIMARY KEY (job_id, generation, attempt)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON job_attempts TO byteor_app;
