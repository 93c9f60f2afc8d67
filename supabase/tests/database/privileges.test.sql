-- Who may do what. The service role (the functions) calls the RPCs and writes; anon and
-- authenticated call nothing and write nothing; authenticated reads its own profile, jobs
-- and ledger rows; anon reads nothing; internals are out of reach.
begin;
\ir ../fixtures/jobs.psql
select plan(19);

create temp table api_role (role name) on commit drop;
insert into api_role values ('anon'), ('authenticated');
create temp table rpc (signature regprocedure) on commit drop;
insert into rpc values
  ('public.apply_replicate_event(text, text, text, text, text, uuid, uuid, jsonb, text[], text, text, text, jsonb, timestamptz, timestamptz, text)'),
  ('public.find_replicate_job(text, text, uuid, uuid)'),
  ('public.stale_replicate_jobs(integer, integer, integer)'),
  ('public.touch_replicate_job(text, uuid)'),
  ('public.lost_replicate_jobs(integer, integer, integer, integer)'),
  ('public.reconcile_check_failed(text, uuid)'),
  ('public.schedule_reconcile(text, text, text)'),
  ('public.unschedule_reconcile()'),
  ('public.note_replicate_event(text, text)'),
  ('public.claim_copy(text, uuid, text, integer)'),
  ('public.release_copy(text, uuid, text)'),
  ('public.record_webhook_rejection(text, text)'),
  ('public.recent_activity(integer, integer)'),
  ('public.prune_webhook_history(integer, integer)');

-- functions
select is_empty(
  $$select p.oid::regprocedure::text, r.role from pg_proc p cross join api_role r
    where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)
      and has_function_privilege(r.role, p.oid, 'execute')$$,
  'anon and authenticated may execute no function in public or private');
select is_empty(
  $$select signature::text from rpc where not has_function_privilege('service_role', signature, 'execute')$$,
  'the service role may execute every RPC');
select is_empty(
  $$select proname from pg_proc where pronamespace = 'public'::regnamespace
    group by proname having count(*) > 1$$,
  'one function per RPC name (an overload makes PostgREST refuse the call)');
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where (p.pronamespace = 'private'::regnamespace or p.oid in (select signature from rpc))
      and not coalesce(p.proconfig @> array['search_path=""'], false)$$,
  'the RPCs and every private function run with an empty search_path');

set local role anon;
select throws_ok($$select public.find_replicate_job('pr_other')$$, '42501', null, 'anon cannot call an RPC');
reset role;
set local role authenticated;
select throws_ok($$select * from public.stale_replicate_jobs(0, null, 10)$$, '42501', null,
  'authenticated cannot call an RPC');
reset role;

-- functions written after the migrations: closed by default
create function public.probe_public() returns integer language sql as 'select 1';
create function private.probe_private() returns integer language sql as 'select 1';
select is(
  (select array_agg(g order by g)
   from pg_proc p cross join aclexplode(p.proacl) a
   cross join concat(p.proname, ' ', coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC')) g
   where p.proname in ('probe_public', 'probe_private') and a.privilege_type = 'EXECUTE'),
  array['probe_private postgres', 'probe_private service_role', 'probe_public postgres', 'probe_public service_role'],
  'a new function in public or private is executable by its owner and the service role only');
select ok(has_function_privilege('service_role', 'private.probe_private()', 'execute'),
  'a new private function is executable by the service role');

-- the private schema
select is_empty(
  $$select role from api_role where has_schema_privilege(role, 'private', 'usage')$$,
  'anon and authenticated cannot use the private schema');
select ok(has_schema_privilege('service_role', 'private', 'usage'), 'the service role can');

-- tables: row level security everywhere, writes for the service role only
select is_empty(
  $$select relname::text from pg_class
    where relnamespace = 'public'::regnamespace and relkind = 'r' and not relrowsecurity$$,
  'row level security is on for every table');
select is_empty(
  $$select r.role, t.relname::text, p.priv from api_role r
    cross join (select oid, relname from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r') t
    cross join unnest(array['insert', 'update', 'delete', 'truncate']) p(priv)
    where has_table_privilege(r.role, t.oid, p.priv)$$,
  'anon and authenticated write no table');
select is_empty(
  $$select relname::text from pg_class
    where relnamespace = 'public'::regnamespace and relkind = 'r' and has_table_privilege('anon', oid, 'select')$$,
  'anon reads no table');
select is(
  (select array_agg(relname::text order by relname) from pg_class
   where relnamespace = 'public'::regnamespace and relkind = 'r' and has_table_privilege('authenticated', oid, 'select')),
  array['credit_ledger', 'models', 'predictions', 'profiles'],
  'authenticated may read the tables it has rows in (not webhook_events)');
select is(
  (select array_agg(tablename || '.' || policyname || ' ' || cmd || ' ' || array_to_string(roles, ',')
                    order by tablename) from pg_policies where schemaname = 'public'),
  array['credit_ledger.credit_ledger_select_own SELECT authenticated', 'models.models_select_own SELECT authenticated',
        'predictions.predictions_select_own SELECT authenticated', 'profiles.profiles_select_own SELECT authenticated'],
  'the policies: each table read by its owner, nothing else');

-- the owner reads own rows only
insert into public.credit_ledger (user_id, delta, reason) values
  (:'u1', 100, 'purchase'), (:'u2', 50, 'purchase'), (:'u2', -10, 'spend');
select set_config('request.jwt.claims', format('{"sub": "%s", "role": "authenticated"}', :'u2'), true) as claims \gset
set local role authenticated;
select is(
  (select array[(select count(*) from public.profiles), (select count(*) from public.models),
                (select count(*) from public.predictions), (select count(*) from public.credit_ledger)]::integer[]),
  array[1, 1, 4, 2], 'u2 sees its profile, model, predictions and ledger rows');
select is_empty(
  format($$select 'models' from public.models where user_id <> %1$L
           union all select 'predictions' from public.predictions where user_id <> %1$L
           union all select 'credit_ledger' from public.credit_ledger where user_id <> %1$L
           union all select 'profiles' from public.profiles where id <> %1$L$$, :'u2'),
  'and nobody else''s');
select throws_ok($$select count(*) from public.webhook_events$$, '42501', null,
  'authenticated cannot read webhook_events');
reset role;
select set_config('request.jwt.claims', '{"role": "authenticated"}', true) as claims \gset
set local role authenticated;
select is((select count(*)::integer from public.models), 0, 'without a user id nothing is visible');
reset role;

select * from finish();
rollback;
