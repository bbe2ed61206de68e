-- Authorization denials counted per principal, route and minute before they
-- become access.denied events (commands/denials.py). A denied request costs one
-- upsert here instead of one event, so a flood of them cannot flood the audit
-- log; the flusher moves each closed minute into the event store in the same
-- transaction that deletes it, so a count is written once or stays here.
CREATE TABLE access_denials (
    principal_key     text        NOT NULL,
    route             text        NOT NULL,
    minute            timestamptz NOT NULL,
    principal_kind    text        NOT NULL,
    principal_id      uuid        NOT NULL,
    credential_family text        NOT NULL,
    credential_id     uuid        NOT NULL,
    org_id            uuid,
    status            smallint    NOT NULL,
    code              text        NOT NULL,
    permission        text,
    reason            text,
    count             integer     NOT NULL,
    first_at          timestamptz NOT NULL,
    last_at           timestamptz NOT NULL,
    PRIMARY KEY (principal_key, route, minute)
);

CREATE INDEX access_denials_minute_idx ON access_denials (minute);

GRANT SELECT, INSERT, UPDATE, DELETE ON access_denials TO byteor_app;
