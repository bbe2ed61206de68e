-- Projection bookkeeping: one checkpoint row per projection, advanced in the
-- same transaction as the read-table change it covers. `tx_complete` says the
-- checkpoint's transaction was fully applied (a batch may end mid-transaction),
-- which read-your-writes waits need.
CREATE TABLE projection_checkpoints (
    name            text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT '0',
    position        bigint      NOT NULL DEFAULT 0,
    tx_complete     boolean     NOT NULL DEFAULT true,
    events_applied  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON projection_checkpoints TO byteor_app;
