-- What lets an API process answer most authenticated requests without a round
-- trip (commands/credential_cache.py, decision 0014): a rate-limit take of
-- several units at once (a lease the process spends locally within the bucket
-- it was counted in), and a notification whenever a credential stops being
-- what a process may have cached.

-- Take up to `p_units` requests for `p_key` at once: `granted` is how many were
-- counted (0 when refused). The rule is rate_limit_take's (0006): the live
-- buckets, the oldest counted in full, may never sum to more than the limit;
-- a take of several units is admitted as far as that allows.
CREATE FUNCTION rate_limit_take_units(
    p_key text, p_limit integer, p_window_ms bigint, p_bucket_ms bigint, p_units integer)
RETURNS TABLE (admitted boolean, granted integer, now_ms bigint, buckets bigint[], counts integer[])
LANGUAGE plpgsql
AS $$
DECLARE
    v_buckets bigint[];
    v_counts  integer[];
    v_now     bigint;
    v_current bigint;
    v_used    integer;
    v_grant   integer;
    v_n       integer;
BEGIN
    SELECT r.buckets, r.counts INTO v_buckets, v_counts
      FROM rate_limits r WHERE r.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        v_now := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        v_grant := least(greatest(p_units, 1), p_limit);
        IF v_grant >= 1 THEN
            INSERT INTO rate_limits AS r (key, buckets, counts, expires_at)
            VALUES (p_key, ARRAY[v_now / p_bucket_ms], ARRAY[v_grant],
                    to_timestamp(((v_now / p_bucket_ms + 1) * p_bucket_ms + p_window_ms) / 1000.0))
            ON CONFLICT (key) DO NOTHING;
            IF FOUND THEN
                RETURN QUERY SELECT true, v_grant, v_now, ARRAY[v_now / p_bucket_ms], ARRAY[v_grant];
                RETURN;
            END IF;
        END IF;
        -- Another call inserted the key meanwhile (or the limit is zero): judge as usual.
        SELECT r.buckets, r.counts INTO v_buckets, v_counts
          FROM rate_limits r WHERE r.key = p_key FOR UPDATE;
        IF NOT FOUND THEN
            v_buckets := '{}';
            v_counts := '{}';
        END IF;
    END IF;

    v_now := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_current := v_now / p_bucket_ms;
    SELECT coalesce(array_agg(u.b ORDER BY u.b), '{}'),
           coalesce(array_agg(u.c ORDER BY u.b), '{}'),
           coalesce(sum(u.c), 0)
      INTO v_buckets, v_counts, v_used
      FROM unnest(v_buckets, v_counts) AS u(b, c)
     WHERE u.b >= (v_now - p_window_ms) / p_bucket_ms;

    v_grant := least(greatest(p_units, 1), p_limit - v_used);
    IF v_grant < 1 THEN
        RETURN QUERY SELECT false, 0, v_now, v_buckets, v_counts;
        RETURN;
    END IF;

    v_n := cardinality(v_buckets);
    IF v_n > 0 AND v_buckets[v_n] >= v_current THEN
        v_counts[v_n] := v_counts[v_n] + v_grant;
    ELSE
        v_buckets := v_buckets || v_current;
        v_counts := v_counts || v_grant;
        v_n := v_n + 1;
    END IF;
    UPDATE rate_limits r
       SET buckets = v_buckets,
           counts = v_counts,
           expires_at = to_timestamp(((v_buckets[v_n] + 1) * p_bucket_ms + p_window_ms) / 1000.0)
     WHERE r.key = p_key;

    IF random() < 0.005 THEN
        DELETE FROM rate_limits
         WHERE key IN (SELECT d.key FROM rate_limits d
                        WHERE d.expires_at < clock_timestamp()
                        LIMIT 100 FOR UPDATE SKIP LOCKED);
    END IF;

    RETURN QUERY SELECT true, v_grant, v_now, v_buckets, v_counts;
END
$$;

REVOKE ALL ON FUNCTION rate_limit_take_units(text, integer, bigint, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rate_limit_take_units(text, integer, bigint, bigint, integer) TO byteor_app;

-- One rule, not two: rate_limit_take (0006) becomes a take of one unit, so the
-- single-request and the leased paths cannot drift apart.
CREATE OR REPLACE FUNCTION rate_limit_take(
    p_key text, p_limit integer, p_window_ms bigint, p_bucket_ms bigint)
RETURNS TABLE (admitted boolean, now_ms bigint, buckets bigint[], counts integer[])
LANGUAGE sql
AS $$
    SELECT t.admitted, t.now_ms, t.buckets, t.counts
    FROM rate_limit_take_units(p_key, p_limit, p_window_ms, p_bucket_ms, 1) AS t
$$;

-- STRICT, for the credential lookup's lateral join (as rate_limit_take_strict, 0016):
-- a NULL key (unknown, revoked or expired credential) takes nothing.
CREATE FUNCTION rate_limit_take_units_strict(
    p_key text, p_limit integer, p_window_ms bigint, p_bucket_ms bigint, p_units integer)
RETURNS TABLE (admitted boolean, granted integer, now_ms bigint, buckets bigint[], counts integer[])
LANGUAGE sql STRICT
AS $$ SELECT * FROM rate_limit_take_units(p_key, p_limit, p_window_ms, p_bucket_ms, p_units) $$;

REVOKE ALL ON FUNCTION rate_limit_take_units_strict(text, integer, bigint, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rate_limit_take_units_strict(text, integer, bigint, bigint, integer) TO byteor_app;

-- Every change that can end or narrow a credential notifies `byteor_credentials`
-- (delivered at commit, to every listening API process, which then forgets
-- what it cached). Statement triggers on the columns that matter: the
-- once-a-minute last_used_at touch does not fire them.
CREATE FUNCTION notify_credentials_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('byteor_credentials', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER personal_access_tokens_changed
    AFTER UPDATE OF revoked_at, expires_at, scopes, user_id, token_hash OR DELETE
    ON personal_access_tokens FOR EACH STATEMENT EXECUTE FUNCTION notify_credentials_changed();
CREATE TRIGGER org_api_keys_changed
    AFTER UPDATE OF revoked_at, expires_at, role, org_id, key_hash OR DELETE
    ON org_api_keys FOR EACH STATEMENT EXECUTE FUNCTION notify_credentials_changed();
CREATE TRIGGER user_sessions_changed
    AFTER UPDATE OF revoked_at, expires_at, user_id, token_hash OR DELETE
    ON user_sessions FOR EACH STATEMENT EXECUTE FUNCTION notify_credentials_changed();
CREATE TRIGGER agent_keys_changed
    AFTER UPDATE OF revoked_at, agent_id, key_hash OR DELETE
    ON agent_keys FOR EACH STATEMENT EXECUTE FUNCTION notify_credentials_changed();
CREATE TRIGGER agents_changed
    AFTER UPDATE OF revoked_at, org_id, project_id, environment_id OR DELETE
    ON agents FOR EACH STATEMENT EXECUTE FUNCTION notify_credentials_changed();
