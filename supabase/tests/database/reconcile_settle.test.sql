-- Reconcile's backoff (reconcile_check_failed, stale_replicate_jobs skipping, touch
-- clearing), its second work list (lost_replicate_jobs: orphans and old jobs) and the
-- database schedule (schedule_reconcile / unschedule_reconcile with pg_cron, pg_net and
-- Vault, or a clear error without them).
begin;
\ir ../fixtures/jobs.psql
select plan(24);

insert into public.predictions (id, user_id, status, replicate_prediction_id, credits_cost, created_at, updated_at)
select gen_random_uuid(), :'u1', status, rid, 1, now() - created, now() - updated
from (values
  ('processing', 'bo_1', interval '3 hours', interval '3 hours'),   -- fails its checks
  ('processing', 'bo_2', interval '2 hours', interval '2 hours'),   -- a lost webhook
  ('processing', 'old_1', interval '8 days', interval '8 days'),    -- past the max age
  ('processing', 'old_2', interval '8 days', interval '10 seconds') -- old but not quiet
) as v(status, rid, created, updated);
insert into public.predictions (id, user_id, status, credits_cost, created_at, updated_at)
  values ('00000000-0000-4000-8000-0000000d0001', :'u2', 'pending', 3, now() - interval '2 days', now() - interval '2 days'),
         ('00000000-0000-4000-8000-0000000d0002', :'u2', 'pending', 3, now() - interval '2 hours', now() - interval '2 hours');
update public.models set created_at = now() - interval '3 days', updated_at = now() - interval '1 minute'
  where id = :'m1';  -- no Replicate id, charged three days ago

set local role service_role;

-- backoff
select is(public.reconcile_check_failed('prediction',
            (select id from public.predictions where replicate_prediction_id = 'bo_1')) ->> 'attempts',
  '1', 'a failed check counts one attempt');
select is((select next_check_at from public.predictions where replicate_prediction_id = 'bo_1'),
  now() + interval '60 seconds', 'the first delay is a minute');
select is((select updated_at from public.predictions where replicate_prediction_id = 'bo_1'),
  now() - interval '3 hours', 'backing off is not a change of the job: updated_at stays');
select is((select (public.reconcile_check_failed('prediction', id) ->> 'next_check_at')::timestamptz
           from public.predictions where replicate_prediction_id = 'bo_1'),
  now() + interval '120 seconds', 'the delay doubles');
update public.predictions set reconcile_attempts = 40 where replicate_prediction_id = 'bo_1';
select is((select (public.reconcile_check_failed('prediction', id) ->> 'next_check_at')::timestamptz
           from public.predictions where replicate_prediction_id = 'bo_1'),
  now() + interval '1 hour', 'and stays at most an hour');
select is(public.reconcile_check_failed('model', gen_random_uuid()), null, 'no such job: null');
select throws_ok($$select public.reconcile_check_failed('dataset', gen_random_uuid())$$,
  '22023', 'unknown job kind: dataset', 'an unknown kind is refused');
select is(
  (select array_agg(replicate_id order by ord)
   from (select s.*, row_number() over () as ord from public.stale_replicate_jobs(120, 86400 * 7, 1000) s) x
   where replicate_id in ('bo_1', 'bo_2')),
  array['bo_2'], 'a job backing off is not listed; the lost webhook behind it is');
update public.predictions set next_check_at = now() - interval '1 second' where replicate_prediction_id = 'bo_1';
select is(
  (select array_agg(replicate_id order by ord)
   from (select s.*, row_number() over () as ord from public.stale_replicate_jobs(120, 86400 * 7, 1000) s) x
   where replicate_id in ('bo_1', 'bo_2')),
  array['bo_2', 'bo_1'], 'once due it is listed again, after the jobs that waited longer');
select lives_ok($$select public.touch_replicate_job('prediction',
                    (select id from public.predictions where replicate_prediction_id = 'bo_1'))$$,
  'a check that worked touches the job');
select is((select array[reconcile_attempts::text, coalesce(next_check_at::text, 'none')]
           from public.predictions where replicate_prediction_id = 'bo_1'),
  array['0', 'none'], 'and clears its backoff');

-- lost_replicate_jobs: orphans past a day, old jobs past the max age and quiet
select is(
  (select array_agg(coalesce(replicate_id, job_id::text) order by coalesce(replicate_id, job_id::text))
   from public.lost_replicate_jobs(120, 86400 * 7, 86400, 1000)
   where job_id in (:'m1', '00000000-0000-4000-8000-0000000d0001', '00000000-0000-4000-8000-0000000d0002')
      or replicate_id in ('old_1', 'old_2', 'bo_2', 'pr_canceled')),
  array['00000000-0000-4000-8000-0000000b0001', '00000000-0000-4000-8000-0000000d0001', 'old_1'],
  'orphans older than a day and quiet jobs older than the max age; not young ones');
select is((select count(*)::integer from public.stale_replicate_jobs(120, 86400 * 7, 1000)
           where replicate_id = 'old_1'), 0, 'an old job is on the second list only');
select is((select status from public.lost_replicate_jobs(120, 86400 * 7, 86400, 1000) where job_id = :'m1'),
  'pending', 'an orphan model is listed with its status');
select ok(public.reconcile_check_failed('model', :'m1') is not null, 'an orphan can back off too');
select is((select count(*)::integer from public.lost_replicate_jobs(120, 86400 * 7, 86400, 1000) where job_id = :'m1'),
  0, 'and is skipped while it does');
select is(public.apply_replicate_event(p_webhook_id => 'w_orphan', p_route => 'reconcile', p_replicate_id => null,
            p_status => 'aborted', p_job_kind => 'prediction', p_job_id => '00000000-0000-4000-8000-0000000d0001',
            p_user_id => :'u2', p_error => 'never started on Replicate', p_outcome => 'reconciled') ->> 'credits_refunded',
  '3', 'an orphan is aborted and refunded without a Replicate id');

-- the schedule
select is(public.schedule_reconcile('https://app.example/api/cron/reconcile', 'first-secret'),
          public.schedule_reconcile('https://app.example/api/cron/reconcile', 'second-secret'),
  'scheduling twice answers the same job');
reset role;
select is((select array_agg(schedule || ' ' || command) from cron.job where jobname = 'replicate-webhooks-reconcile'),
  array['* * * * * select private.call_reconcile()'], 'one job, every minute, no secret in its command');
select is((select array_agg(name || '=' || decrypted_secret order by name) from vault.decrypted_secrets
           where name like 'reconcile\_%'),
  array['reconcile_cron_secret=second-secret', 'reconcile_url=https://app.example/api/cron/reconcile'],
  'the URL and the newest secret are in Vault');
select private.call_reconcile() as request \gset
select is((select headers ->> 'Authorization' || ' ' || url from net.stand_in_requests where id = :'request'),
  'Bearer second-secret https://app.example/api/cron/reconcile', 'the job posts to the URL with the secret as bearer token');
select throws_ok($$select public.schedule_reconcile('ftp://x', 's')$$, '22023',
  'reconcile schedule: p_url must be an http(s) URL', 'a URL that is not http(s) is refused');
set local role service_role;
select is(array[public.unschedule_reconcile(), public.unschedule_reconcile()], array[true, false],
  'unscheduling removes the job once');
reset role;

-- without pg_cron, pg_net and Vault (undone with the rest of this transaction)
set local client_min_messages = warning;
drop extension pg_cron;
drop schema net cascade;
drop schema vault cascade;
select throws_ok($$select public.schedule_reconcile('https://app.example/api/cron/reconcile', 's')$$, '0A000',
  'reconcile schedule: pg_cron (Supabase Cron), pg_net, Vault (supabase_vault) not installed',
  'without the extensions the call says what is missing');

select * from finish();
rollback;
