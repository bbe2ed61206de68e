-- Per-organization data keys for inline secrets (ARCHITECTURE.md "Secrets",
-- commands/secret_keys.py). A data key is stored only wrapped: AES-256-GCM under
-- the master key named by master_key_id, which lives in configuration, never
-- here. Rotation re-wraps rows in place (wrapped_key, master_key_id,
-- rewrapped_at); a fresh data key retires the org's current one, which stays
-- to decrypt what it encrypted. Key material is operational state, not a
-- domain fact, so these rows change without events.
CREATE TABLE org_data_keys (
    key_id         text        PRIMARY KEY,
    org_id         uuid        NOT NULL,
    wrapped_key    bytea       NOT NULL,
    master_key_id  text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rewrapped_at   timestamptz,
    retired_at     timestamptz
);
-- At most one current (unretired) key per organization: concurrent first uses
-- race on this index (INSERT ... ON CONFLICT DO NOTHING) and all read the winner.
CREATE UNIQUE INDEX org_data_keys_current_idx ON org_data_keys (org_id) WHERE retired_at IS NULL;
CREATE INDEX org_data_keys_master_idx ON org_data_keys (master_key_id, key_id);
GRANT SELECT, INSERT ON org_data_keys TO byteor_app;
GRANT UPDATE (wrapped_key, master_key_id, rewrapped_at, retired_at) ON org_data_keys TO byteor_app;
