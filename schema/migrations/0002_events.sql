-- The event store, which is also the audit log.
--
-- Ordering. `position` comes from an identity sequence and is unique, but
-- sequence values are handed out when rows are inserted, not when transactions
-- commit: a transaction holding position 10 may commit after one holding 11.
-- A reader that remembered "I have seen up to 11" would skip 10 forever. So the
-- feed is ordered by (transaction_id, position), where transaction_id is the
-- writer's pg_current_xact_id(), and readers only read rows whose transaction
-- id is below pg_snapshot_xmin(pg_current_snapshot()): every transaction below
-- that horizon has finished, so nothing can appear behind a reader's cursor.
-- Writers never wait for each other (no table lock, no counter row).
--
-- Because a still-open transaction holds the horizon back, every session has
-- statement, lock and idle-in-transaction timeouts (set by the application's
-- connection settings).
--
-- Payloads are `json`, not `jsonb`: kept byte for byte as the application
-- encoded them (what an audit hash chain must cover), validated on insert,
-- and neither parsed into jsonb on every append nor printed back to text on
-- every read (measured: jsonb cost ~0.7 µs per row on the feed).
CREATE TABLE events (
    position        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    stream_id       text        NOT NULL,
    stream_type     text        NOT NULL,
    stream_version  integer     NOT NULL,
    event_type      text        NOT NULL,
    schema_version  smallint    NOT NULL DEFAULT 1,
    payload         json        NOT NULL,
    tenant_id       uuid,
    actor_kind      text        NOT NULL,
    actor_id        text        NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    command_id      text,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_positive CHECK (stream_version >= 0),
    CONSTRAINT events_actor_kind_known
        CHECK (actor_kind IN ('user', 'token', 'api_key', 'agent', 'system'))
);

CREATE INDEX events_feed_idx ON events (transaction_id, position);
-- Every index costs every append (measured: ~30% from six indexes to four), so
-- indexes for audit queries arrive with those queries, each in its migration.

-- Append-only, twice over: the application role has no UPDATE/DELETE/TRUNCATE
-- privilege, and triggers refuse those statements even for the owner.
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Optimistic concurrency beyond the unique index: appending at version v > 1
-- requires version v - 1 to exist, so a caller cannot leave a gap by claiming
-- a stream is further along than it is.
CREATE FUNCTION events_expect_version(p_stream_id text, p_expected integer)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_expected > 0 AND NOT EXISTS (
        SELECT 1 FROM events WHERE stream_id = p_stream_id AND stream_version = p_expected
    ) THEN
        RAISE EXCEPTION 'stream % is not at version %', p_stream_id, p_expected
            USING ERRCODE = 'BY409', CONSTRAINT = 'events_expected_version';
    END IF;
    RETURN p_expected;
END
$$;

REVOKE ALL ON events FROM PUBLIC;
GRANT SELECT, INSERT ON events TO byteor_app;
GRANT EXECUTE ON FUNCTION events_expect_version(text, integer) TO byteor_app;

-- Idempotent commands: the first result of (principal, key) is kept and
-- returned again; written in the same statement as the command's events.
CREATE TABLE command_log (
    principal        text        NOT NULL,
    idempotency_key  text        NOT NULL,
    request_hash     text        NOT NULL,
    status_code      integer     NOT NULL,
    response         bytea       NOT NULL,
    last_position    bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, idempotency_key)
);
CREATE INDEX command_log_created_idx ON command_log (created_at);
GRANT SELECT, INSERT, DELETE ON command_log TO byteor_app;
