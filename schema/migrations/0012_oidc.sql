-- OIDC login (commands/oidc_login.py, docs/decisions/0007-oidc-login.md).

-- Logins between GET /auth/login and GET /auth/callback. They live here, not
-- in an API process's memory, because the provider may send the browser back
-- to any API process. The state value itself is never stored: rows are found
-- by its SHA-256, and the nonce and PKCE verifier are sealed (AES-GCM) under a
-- key derived from the state, so reading this table is not enough to finish a
-- login. A row is deleted when its callback arrives (single use), and expired
-- rows are swept by later logins.
CREATE TABLE oidc_pending_logins (
    state_hash  bytea       PRIMARY KEY,
    sealed      bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX oidc_pending_logins_expiry_idx ON oidc_pending_logins (expires_at);
GRANT SELECT, INSERT, DELETE ON oidc_pending_logins TO byteor_app;

-- Which provider account signs in as which user: the ID token's issuer and
-- subject (stable at the provider, unlike an e-mail address). A user has at
-- most one account per issuer.
CREATE TABLE user_oidc_identities (
    issuer     text        NOT NULL,
    subject    text        NOT NULL,
    user_id    uuid        NOT NULL,
    linked_at  timestamptz NOT NULL,
    PRIMARY KEY (issuer, subject),
    UNIQUE (user_id, issuer)
);
GRANT SELECT, INSERT ON user_oidc_identities TO byteor_app;
