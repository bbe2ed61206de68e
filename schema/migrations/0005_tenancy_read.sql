-- Read tables of the tenancy projection (projections/tenancy.py). Rows are
-- soft-deleted: a deleted parent marks its children deleted too, while the
-- events stay. `revision` is the stream version last applied, which makes
-- every upsert idempotent under replays.
CREATE TABLE org_view (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    settings    jsonb       NOT NULL DEFAULT '{}',
    revision    integer     NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz
);

CREATE TABLE org_member_view (
    org_id      uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    role        text        NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_member_view_user_idx ON org_member_view (user_id, org_id);

CREATE TABLE project_view (
    id           uuid        PRIMARY KEY,
    org_id       uuid        NOT NULL,
    name         text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    revision     integer     NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    deleted_at   timestamptz
);
CREATE INDEX project_view_org_idx ON project_view (org_id, created_at, id);

CREATE TABLE environment_view (
    id           uuid        PRIMARY KEY,
    org_id       uuid        NOT NULL,
    project_id   uuid        NOT NULL,
    name         text        NOT NULL,
    posture      text        NOT NULL,
    settings     jsonb       NOT NULL,
    revision     integer     NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    deleted_at   timestamptz
);
CREATE INDEX environment_view_project_idx ON environment_view (project_id, created_at, id);
CREATE INDEX environment_view_org_idx ON environment_view (org_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON org_view, org_member_view, project_view, environment_view
    TO byteor_app;
