-- Credentials are write-side state, changed in the same transaction as the
-- event that records the change; the token itself is never stored, only its
-- SHA-256 (tokens carry >= 256 bits of randomness, so a fast hash is enough
-- and lets the lookup use an index).
CREATE TABLE personal_access_tokens (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL,
    name          text        NOT NULL,
    prefix        text        NOT NULL,
    token_hash    bytea       NOT NULL UNIQUE,
    scopes        text[]      NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX personal_access_tokens_user_idx ON personal_access_tokens (user_id);
GRANT SELECT, INSERT ON personal_access_tokens TO byteor_app;
GRANT UPDATE (revoked_at, last_used_at) ON personal_access_tokens TO byteor_app;

-- Users' e-mail addresses are unique; claimed here in the same transaction as
-- the user.created event.
CREATE TABLE user_emails (
    email    text PRIMARY KEY,
    user_id  uuid NOT NULL UNIQUE
);
GRANT SELECT, INSERT ON user_emails TO byteor_app;
