-- Signing keys, deployments and approvals (DOMAIN.md §5).
--
-- signing_keys holds key material, written in the transaction of each
-- signing_key.* event (commands/signing_keys.py): the Ed25519 private key only
-- as AES-256-GCM ciphertext under the organization's data key
-- (commands/secret_keys.py, decision 0010), never in an event.
CREATE TABLE signing_keys (
    id                 uuid        PRIMARY KEY,
    org_id             uuid        NOT NULL,
    name               text        NOT NULL,
    kid                text        NOT NULL UNIQUE,
    public_key         bytea       NOT NULL,
    private_key_ref    text        NOT NULL,
    data_key_id        text        NOT NULL,
    status             text        NOT NULL CHECK (status IN ('active', 'retiring', 'retired')),
    not_before         timestamptz NOT NULL,
    not_after          timestamptz,
    replaced_by        uuid,
    revision           integer     NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX signing_keys_org_idx ON signing_keys (org_id, created_at, id);
GRANT SELECT, INSERT ON signing_keys TO byteor_app;
GRANT UPDATE (status, not_after, replaced_by, revision, updated_at) ON signing_keys TO byteor_app;

-- Read models of projections/deployments.py: the folded aggregate in ``state``
-- (domain.deployment.Deployment / domain.approval.Approval as JSON) plus the
-- columns the queries filter on; the in-flight cap counts ``status`` here.
CREATE TABLE deployment_view (
    id              uuid        PRIMARY KEY,
    org_id          uuid        NOT NULL,
    project_id      uuid        NOT NULL,
    environment_id  uuid        NOT NULL,
    status          text        NOT NULL,
    approval_id     uuid,
    -- the config bundle's tuning, copied when the deployment is requested
    requested_tuning jsonb,
    state           jsonb       NOT NULL,
    stream_version  integer     NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX deployment_view_env_idx ON deployment_view (environment_id, created_at, id);
CREATE INDEX deployment_view_status_idx ON deployment_view (environment_id, status);

CREATE TABLE approval_view (
    id              uuid        PRIMARY KEY,
    org_id          uuid        NOT NULL,
    project_id      uuid        NOT NULL,
    environment_id  uuid        NOT NULL,
    status          text        NOT NULL,
    state           jsonb       NOT NULL,
    stream_version  integer     NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX approval_view_env_idx ON approval_view (environment_id, created_at, id);

GRANT SELECT, INSERT, UPDATE, DELETE ON deployment_view, approval_view TO byteor_app;
