-- Rate limits (DOMAIN.md §10), shared by every API process: one row per
-- limited key (a principal, a client address or an environment, per route
-- class; commands/ratelimit.py builds the keys).
--
-- A row holds the admitted requests of the last window counted per bucket (a
-- sixtieth of the window): `buckets` are bucket numbers (epoch milliseconds
-- divided by the bucket length), ascending, and `counts` the admitted requests
-- in each. A request is admitted when the buckets that may still hold requests
-- of the last window (every bucket from the one holding now - window onwards,
-- the partly expired oldest one included in full) sum to less than the limit.
-- Counting that oldest bucket in full makes the rule conservative: no interval
-- of one window ever holds more admitted requests than the limit; capacity
-- frees up at most one bucket later than an exact log would free it.
--
-- UNLOGGED: the counts are short-lived and worth no WAL; a commit that wrote
-- no WAL does not wait for a flush, so a key's row lock is held for
-- microseconds. A crash (or a failover) resets the counts, which is harmless.
CREATE UNLOGGED TABLE rate_limits (
    key         text        PRIMARY KEY,
    buckets     bigint[]    NOT NULL,
    counts      integer[]   NOT NULL,
    -- When every counted bucket has left the window: the row is then useless.
    expires_at  timestamptz NOT NULL
) WITH (fillfactor = 50);  -- room on the page for HOT updates: one per admitted request

GRANT SELECT, INSERT, UPDATE, DELETE ON rate_limits TO byteor_app;

-- Take one request for `p_key`: admitted or not, with the clock it was judged
-- at (epoch milliseconds) and the key's buckets afterwards, from which the
-- caller computes X-RateLimit-Remaining/-Reset and Retry-After.
--
-- One call is one round trip. Concurrent calls for a key serialize on its row
-- lock, and the clock is read only once the lock is held, so calls are judged
-- in the order they take effect and every call sees every admission before it
-- (whichever process made it). A refused request writes nothing.
CREATE FUNCTION rate_limit_take(p_key text, p_limit integer, p_window_ms bigint, p_bucket_ms bigint)
RETURNS TABLE (admitted boolean, now_ms bigint, buckets bigint[], counts integer[])
LANGUAGE plpgsql
AS $$
DECLARE
    v_buckets bigint[];
    v_counts  integer[];
    v_now     bigint;
    v_current bigint;
    v_used    integer;
    v_n       integer;
BEGIN
    SELECT r.buckets, r.counts INTO v_buckets, v_counts
      FROM rate_limits r WHERE r.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        v_now := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        IF p_limit >= 1 THEN
            INSERT INTO rate_limits AS r (key, buckets, counts, expires_at)
            VALUES (p_key, ARRAY[v_now / p_bucket_ms], ARRAY[1],
                    to_timestamp(((v_now / p_bucket_ms + 1) * p_bucket_ms + p_window_ms) / 1000.0))
            ON CONFLICT (key) DO NOTHING;
            IF FOUND THEN
                RETURN QUERY SELECT true, v_now, ARRAY[v_now / p_bucket_ms], ARRAY[1];
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

    IF v_used >= p_limit THEN
        RETURN QUERY SELECT false, v_now, v_buckets, v_counts;
        RETURN;
    END IF;

    v_n := cardinality(v_buckets);
    IF v_n > 0 AND v_buckets[v_n] >= v_current THEN
        v_counts[v_n] := v_counts[v_n] + 1;  -- the clock never runs back under the lock
    ELSE
        v_buckets := v_buckets || v_current;
        v_counts := v_counts || 1;
        v_n := v_n + 1;
    END IF;
    UPDATE rate_limits r
       SET buckets = v_buckets,
           counts = v_counts,
           expires_at = to_timestamp(((v_buckets[v_n] + 1) * p_bucket_ms + p_window_ms) / 1000.0)
     WHERE r.key = p_key;

    -- Expired keys go opportunistically: about one call in 200 deletes up to 100
    -- of them, skipping rows other calls hold.
    IF random() < 0.005 THEN
        DELETE FROM rate_limits
         WHERE key IN (SELECT d.key FROM rate_limits d
                        WHERE d.expires_at < clock_timestamp()
                        LIMIT 100 FOR UPDATE SKIP LOCKED);
    END IF;

    RETURN QUERY SELECT true, v_now, v_buckets, v_counts;
END
$$;

REVOKE ALL ON FUNCTION rate_limit_take(text, integer, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rate_limit_take(text, integer, bigint, bigint) TO byteor_app;
