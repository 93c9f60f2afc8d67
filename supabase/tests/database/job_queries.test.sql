-- The read and touch RPCs (find_replicate_job, stale_replicate_jobs, touch_replicate_job)
-- and the updated_at trigger, called as the service role.
begin;
\ir ../fixtures/jobs.psql
select plan(18);

-- reconcile's candidates: ages relative to now (rc_1 .. rc_7)
insert into public.predictions (id, user_id, status, replicate_prediction_id, created_at, updated_at)
select gen_random_uuid(), :'u1', status, rid, now() - created, now() - updated
from (values
  ('processing', 'rc_1', interval '2 hours', interval '10 minutes'),
  ('pending', 'rc_2', interval '2 hours', interval '20 minutes'),
  ('starting', null, interval '2 hours', interval '30 minutes'),     -- no Replicate id
  ('processing', 'rc_4', interval '3 days', interval '3 days'),      -- older than a day
  ('succeeded', 'rc_5', interval '2 hours', interval '40 minutes'),  -- over
  ('processing', 'rc_6', interval '2 hours', interval '30 seconds')  -- not quiet yet
) as v(status, rid, created, updated);
insert into public.models (user_id, status, replicate_training_id, created_at, updated_at)
  values (:'u2', 'starting', 'rc_7', now() - interval '2 hours', now() - interval '15 minutes');
update public.models set status = 'succeeded', replicate_training_id = 'tr_1' where id = :'m1';

set local role service_role;

-- find_replicate_job: the same lookup as apply_replicate_event, nothing locked
select is(public.find_replicate_job('tr_1'),
  jsonb_build_object('job', 'model', 'job_id', :'m1'::uuid, 'user_id', :'u1'::uuid,
                     'status', 'succeeded', 'replicate_id', 'tr_1'),
  'find a training by its Replicate id');
select is(public.find_replicate_job('pr_canceled') ->> 'job', 'upscale', 'an upscale by kind');
select is(public.find_replicate_job('pr_aborted') ->> 'job', 'upscale', 'an upscale by prompt');
select is(public.find_replicate_job(p_replicate_id => 'whatever', p_job_kind => 'prediction',
            p_job_id => :'p5', p_user_id => :'u2') ->> 'replicate_id',
  'pr_other', 'find by job id answers the stored Replicate id');
select is(public.find_replicate_job('nobody_at_all'), null, 'an unknown id finds nothing');
select is(public.find_replicate_job(p_replicate_id => null, p_job_kind => 'model',
            p_job_id => :'m1', p_user_id => :'u2'), null, 'the right job with the wrong user finds nothing');
select is(public.find_replicate_job('tr_1', 'prediction'), null, 'the kind restricts the lookup');

-- stale_replicate_jobs: older than 120 s, created within a day; quietest first
select is(
  (select array_agg(replicate_id || ':' || job order by ord)
   from (select s.*, row_number() over () as ord from public.stale_replicate_jobs(120, 86400, 1000) s) x
   where replicate_id like 'rc\_%'),
  array['rc_2:prediction', 'rc_7:model', 'rc_1:prediction'], 'the work list, oldest first');
select is((select count(*)::integer from public.stale_replicate_jobs(120, 86400, 1)), 1, 'the limit holds');
select ok(exists (select from public.stale_replicate_jobs(120, null, 1000) where replicate_id = 'rc_4'),
  'no age limit without p_max_age_seconds');

-- touch_replicate_job: the job waits another quiet period
select lives_ok(
  $$select public.touch_replicate_job('prediction', (select id from public.predictions where replicate_prediction_id = 'rc_2')),
           public.touch_replicate_job('model', (select id from public.models where replicate_training_id = 'rc_7'))$$,
  'touch a prediction and a model');
select is(
  (select count(*)::integer from public.stale_replicate_jobs(120, 86400, 1000) where replicate_id in ('rc_2', 'rc_7')),
  0, 'touched jobs are not listed');
select throws_ok($$select public.touch_replicate_job('dataset', gen_random_uuid())$$,
  '22023', 'unknown job kind: dataset', 'touch refuses an unknown kind');

-- updated_at (the trigger): any applied event moves it, unless the statement sets it
select is(public.apply_replicate_event(p_webhook_id => 'w_rc_1', p_route => 'unified',
            p_replicate_id => 'rc_1', p_status => 'processing', p_output => '["x"]') ->> 'outcome',
  'applied', 'an output event on a quiet job applies');
select is((select updated_at from public.predictions where replicate_prediction_id = 'rc_1'), now(),
  'an applied event moves updated_at');
update public.models set updated_at = '2026-01-01T00:00:00Z', error = 'aged' where id = :'m2';
select is((select updated_at from public.models where id = :'m2'), '2026-01-01T00:00:00Z'::timestamptz,
  'an update that sets updated_at keeps its value');

-- note_replicate_event: adds to a recorded delivery's detail, and to nothing else
select public.note_replicate_event('w_rc_1', 'not stored: output file 1 refused');
select is((select detail from public.webhook_events where webhook_id = 'w_rc_1'),
  'processing -> processing; not stored: output file 1 refused', 'a note is added to the detail');
select public.note_replicate_event('no_such_delivery', 'x');
select is((select count(*)::integer from public.webhook_events where webhook_id = 'no_such_delivery'),
  0, 'a note for an unknown delivery writes nothing');

reset role;
select * from finish();
rollback;
