-- Read table of the config bundles projection (projections/config_bundles.py).
-- `adapters` holds the public view of each adapter: an inline secret reference
-- shows only its key id, never the ciphertext (which stays in the events) and
-- never the value (which only the deploy bundle build decrypts). `used_by`
-- lists the deployments that used the bundle; a non-empty list locks it.
-- `stream_version` is the stream version last applied (idempotent replays).
CREATE TABLE config_bundle_view (
    id                    uuid        PRIMARY KEY,
    org_id                uuid        NOT NULL,
    project_id            uuid        NOT NULL,
    environment_id        uuid        NOT NULL,
    version_id            uuid        NOT NULL,
    spec_hash             text        NOT NULL,
    required_capabilities jsonb       NOT NULL DEFAULT '[]',
    tuning                jsonb       NOT NULL,
    adapters              jsonb       NOT NULL,
    parameters            jsonb       NOT NULL,
    content_hash          text        NOT NULL,
    used_by               jsonb       NOT NULL DEFAULT '[]',
    stream_version        integer     NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    deleted_at            timestamptz
);
CREATE INDEX config_bundle_view_env_idx ON config_bundle_view (environment_id, created_at, id);

GRANT SELECT, INSERT, UPDATE, DELETE ON config_bundle_view TO byteor_app;
