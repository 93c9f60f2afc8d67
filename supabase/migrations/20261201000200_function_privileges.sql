-- Who may call a function, decided once instead of per signature.
--
-- PostgreSQL gives EXECUTE on every new function to PUBLIC, and Supabase's default
-- privileges give it to anon and authenticated in schema public, so a function written
-- later would be an open RPC unless its author remembered to revoke it. From here on, a
-- new function of the role running the migrations is callable by its owner only (plus the
-- service role in private, see the previous migration); an RPC is opened with an explicit
-- grant next to its definition.
--
-- Two statements, because they undo two different defaults: PUBLIC's EXECUTE is built in
-- and can only be taken back by the global form (a per-schema revoke cannot remove what is
-- granted globally); anon's and authenticated's come from Supabase's per-schema defaults.
-- Functions that already exist keep the privileges they have.

alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke execute on functions from anon, authenticated;
