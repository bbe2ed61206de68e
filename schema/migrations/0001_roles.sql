-- The application role. API, workers and projectors run as (a member of) it;
-- only the migration runner owns tables. Roles are cluster-wide, so creating it
-- is guarded rather than repeated.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'byteor_app') THEN
        CREATE ROLE byteor_app NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO byteor_app;
