-- The probe job type (workers/probe.py), a built-in diagnostic: its handler
-- records every run it starts and one effect per job. The effect's primary key
-- makes a second effect for a job an error the handler sees and reports (an
-- ON CONFLICT DO NOTHING would hide it), so fault tests and operators can tell
-- "ran once" from "ran twice".
CREATE TABLE probe_runs (
    run_id      bigserial   PRIMARY KEY,
    job_id      uuid        NOT NULL,
    generation  integer     NOT NULL,
    attempt     integer     NOT NULL,
    worker      text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- NULL while running or if the worker died; then effect | effect_existed |
    -- transient | permanent
    outcome     text
);
CREATE INDEX probe_runs_job_idx ON probe_runs (job_id);

CREATE TABLE probe_effects (
    job_id      uuid        PRIMARY KEY,
    generation  integer     NOT NULL,
    attempt     integer     NOT NULL,
    run_id      bigint      NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT ON probe_runs, probe_effects TO byteor_app;
GRANT UPDATE (finished_at, outcome) ON probe_runs TO byteor_app;
GRANT USAGE ON SEQUENCE probe_runs_run_id_seq TO byteor_app;
