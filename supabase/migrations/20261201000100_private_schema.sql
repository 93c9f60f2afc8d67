-- The private schema: internals of the state rules (status order, the decision, the job
-- lookup, trigger functions). PostgREST exposes only the schemas in its db-schemas setting
-- (public here and on Supabase), so nothing in private is reachable over HTTP.
--
-- The public functions run as their caller (security invoker); their only caller is the
-- service role, which therefore needs USAGE here and EXECUTE on what they call. anon and
-- authenticated get nothing.

create schema if not exists private;

revoke all on schema private from public, anon, authenticated;
grant usage on schema private to service_role;

-- Functions created here from now on: callable by the service role, by no one else
-- (the PUBLIC default is taken away in the next migration).
alter default privileges in schema private grant execute on functions to service_role;
