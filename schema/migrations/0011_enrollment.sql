-- Enrollment tokens (`bye_`) and agents with their runtime keys (`bya_`),
-- DOMAIN.md §2 and §6. Like the other credential tables (0004, 0007) each
-- secret is stored only as its SHA-256, and a row changes in the same
-- transaction as the event that records the change.

-- One environment, single use, short-lived. An enrollment consumes its token
-- with one guarded UPDATE (used_at IS NULL AND revoked_at IS NULL AND
-- expires_at > now) in the transaction that appends agent.enrolled, so two
-- concurrent enrollments with one token create one agent.
CREATE TABLE enrollment_tokens (
    id              uuid        PRIMARY KEY,
    org_id          uuid        NOT NULL,
    project_id      uuid        NOT NULL,
    environment_id  uuid        NOT NULL,
    name            text,
    labels          jsonb       NOT NULL DEFAULT '{}',
    prefix          text        NOT NULL,
    token_hash      bytea       NOT NULL UNIQUE,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    used_at         timestamptz,
    agent_id        uuid,
    last_used_at    timestamptz
);
CREATE INDEX enrollment_tokens_env_idx ON enrollment_tokens (environment_id, created_at, id);
GRANT SELECT, INSERT ON enrollment_tokens TO byteor_app;
GRANT UPDATE (revoked_at, used_at, agent_id, last_used_at) ON enrollment_tokens TO byteor_app;

-- The agents of an environment: who may hold a runtime key. A live agent's
-- name is unique in its environment.
CREATE TABLE agents (
    id                   uuid        PRIMARY KEY,
    org_id               uuid        NOT NULL,
    project_id           uuid        NOT NULL,
    environment_id       uuid        NOT NULL,
    name                 text        NOT NULL,
    hostname             text,
    labels               jsonb       NOT NULL DEFAULT '{}',
    runtime_version      text,
    capabilities         text[]      NOT NULL DEFAULT '{}',
    enrollment_token_id  uuid        NOT NULL,
    revision             integer     NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    revoked_at           timestamptz
);
CREATE UNIQUE INDEX agents_live_name_idx ON agents (environment_id, name) WHERE revoked_at IS NULL;
CREATE INDEX agents_env_idx ON agents (environment_id, created_at, id);
GRANT SELECT, INSERT ON agents TO byteor_app;
GRANT UPDATE (revision, updated_at, revoked_at) ON agents TO byteor_app;

-- Runtime keys: at most one live key per agent (rotation revokes the old one
-- in the transaction that issues the new one; there is no grace period).
CREATE TABLE agent_keys (
    id            uuid        PRIMARY KEY,
    agent_id      uuid        NOT NULL REFERENCES agents (id),
    prefix        text        NOT NULL,
    key_hash      bytea       NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE UNIQUE INDEX agent_keys_live_idx ON agent_keys (agent_id) WHERE revoked_at IS NULL;
GRANT SELECT, INSERT ON agent_keys TO byteor_app;
GRANT UPDATE (revoked_at, last_used_at) ON agent_keys TO byteor_app;
