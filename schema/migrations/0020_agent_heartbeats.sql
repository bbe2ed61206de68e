-- Agent heartbeats (DOMAIN.md §6): the latest report of each agent, replaced by
-- every heartbeat with one UPSERT, plus how many it sent. Heartbeats are not
-- events: at one per agent per second they would swamp the event store and the
-- audit log with telemetry. Status (online/stale/offline) is derived from
-- received_at when an agent is read.
CREATE TABLE agent_heartbeats (
    agent_id         uuid        PRIMARY KEY REFERENCES agents (id),
    received_at      timestamptz NOT NULL,
    runtime_version  text        NOT NULL,
    deployment_id    uuid,
    bundle_digest    text,
    health           text        NOT NULL,
    applied_tuning   jsonb       NOT NULL DEFAULT '[]',
    counters         jsonb       NOT NULL DEFAULT '{}',
    observations     jsonb       NOT NULL DEFAULT '{}',
    heartbeats       bigint      NOT NULL DEFAULT 1
);
-- A row is rewritten every second per agent: leave room on its page so the
-- update stays HOT (no index change, no index bloat).
ALTER TABLE agent_heartbeats SET (fillfactor = 70);
GRANT SELECT, INSERT, UPDATE ON agent_heartbeats TO byteor_app;
