-- rate_limit_take for a credential looked up in the same statement: the
-- authentication query joins it laterally so a request's credential check and
-- its rate-limit permit cost one round trip, not two (commands/auth.py).
-- STRICT: a NULL key (the credential is unknown, revoked or expired) returns no
-- row without calling rate_limit_take, so a refused credential takes nothing.
CREATE FUNCTION rate_limit_take_strict(p_key text, p_limit integer, p_window_ms bigint, p_bucket_ms bigint)
RETURNS TABLE (admitted boolean, now_ms bigint, buckets bigint[], counts integer[])
LANGUAGE sql STRICT
AS $$ SELECT * FROM rate_limit_take(p_key, p_limit, p_window_ms, p_bucket_ms) $$;

REVOKE ALL ON FUNCTION rate_limit_take_strict(text, integer, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rate_limit_take_strict(text, integer, bigint, bigint) TO byteor_app;
