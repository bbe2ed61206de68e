-- Read tables of the drafts projection (projections/drafts.py): pipeline
-- drafts with their latest validation, and the immutable versions cut from
-- them. `stream_version` is the stream version last applied, which makes
-- every statement idempotent under replays. A draft's input (raw KV text or a
-- plan's JSON) arrives in parts (domain/draft.py) and is concatenated here.
CREATE TABLE draft_view (
    id                    uuid        PRIMARY KEY,
    org_id                uuid        NOT NULL,
    project_id            uuid        NOT NULL,
    name                  text        NOT NULL,
    target                text        NOT NULL,
    input_kind            text        NOT NULL,
    input                 text        NOT NULL,
    revision              integer     NOT NULL,
    input_revision        integer     NOT NULL,
    validation_status     text        NOT NULL,
    validation_revision   integer     NOT NULL,
    diagnostics           jsonb       NOT NULL DEFAULT '[]',
    spec_hash             text,
    required_capabilities jsonb       NOT NULL DEFAULT '[]',
    versions              integer     NOT NULL DEFAULT 0,
    stream_version        integer     NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    deleted_at            timestamptz
);
CREATE INDEX draft_view_project_idx ON draft_view (project_id, created_at, id);

CREATE TABLE version_view (
    id                    uuid        PRIMARY KEY,
    org_id                uuid        NOT NULL,
    project_id            uuid        NOT NULL,
    draft_id              uuid        NOT NULL,
    draft_revision        integer     NOT NULL,
    number                integer     NOT NULL,
    target                text        NOT NULL,
    spec_hash             text        NOT NULL,
    required_capabilities jsonb       NOT NULL,
    report                jsonb       NOT NULL,
    spec                  text        NOT NULL,
    stream_version        integer     NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    UNIQUE (project_id, spec_hash)
);
CREATE INDEX version_view_project_idx ON version_view (project_id, created_at, id);

GRANT SELECT, INSERT, UPDATE, DELETE ON draft_view, version_view TO byteor_app;
