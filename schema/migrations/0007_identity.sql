-- Identity (DOMAIN.md §2): organization API keys, local passwords and human
-- sessions. Like personal access tokens (0004), each secret is stored only as
-- its SHA-256 (the secrets carry 256 random bits); the row changes in the same
-- transaction as the event that records the change, where there is one.

-- Organization API keys (`byo_`): one organization, one role.
CREATE TABLE org_api_keys (
    id            uuid        PRIMARY KEY,
    org_id        uuid        NOT NULL,
    name          text        NOT NULL,
    role          text        NOT NULL,
    prefix        text        NOT NULL,
    key_hash      bytea       NOT NULL UNIQUE,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX org_api_keys_org_idx ON org_api_keys (org_id, created_at, id);
GRANT SELECT, INSERT ON org_api_keys TO byteor_app;
GRANT UPDATE (revoked_at, last_used_at) ON org_api_keys TO byteor_app;

-- Local passwords (development without an IdP): an scrypt hash in PHC-like
-- text form, `scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`, with a per-user salt.
CREATE TABLE user_passwords (
    user_id        uuid        PRIMARY KEY,
    password_hash  text        NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON user_passwords TO byteor_app;

-- Human sessions (`bys_`): issued by /auth/login, revoked by /auth/logout.
CREATE TABLE user_sessions (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL,
    prefix        text        NOT NULL,
    token_hash    bytea       NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX user_sessions_user_idx ON user_sessions (user_id);
GRANT SELECT, INSERT ON user_sessions TO byteor_app;
GRANT UPDATE (revoked_at, last_used_at) ON user_sessions TO byteor_app;

-- Listing a user's tokens newest-last with keyset paging.
CREATE INDEX personal_access_tokens_user_created_idx
    ON personal_access_tokens (user_id, created_at, id);
