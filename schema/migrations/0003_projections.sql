-- Projection bookkeeping: one checkpoint row per projection, a cursor into the
-- commit-ordered feed, advanced in the same transaction as the read-table
-- change it covers (so a read table never holds an event twice or misses one).
CREATE TABLE projection_checkpoints (
    name            text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT '0',
    position        bigint      NOT NULL DEFAULT 0,
    events_applied  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON projection_checkpoints TO byteor_app;
