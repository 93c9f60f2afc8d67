-- Broadcast from the database: a job's visible change is one message on its owner's
-- private topic user:<user_id>:jobs (realtime.messages, the local stack's stand-in for
-- Realtime's), and the policy on realtime.messages lets only that user receive it.
-- Without Realtime the jobs are written as before, with nothing sent.
begin;
\ir ../fixtures/jobs.psql
select plan(17);

create temp view sent as
  select topic, event, extension, private, payload from realtime.messages;

-- the fixture's new jobs were announced, each on its owner's topic
select is((select count(*)::integer from sent where topic = 'user:' || :'u1' || ':jobs'), 4,
  'u1''s two models and two predictions were announced on u1''s topic');
select is((select count(*)::integer from sent where topic = 'user:' || :'u2' || ':jobs'), 5,
  'u2''s jobs on u2''s');
select is(
  (select payload from sent where payload ->> 'id' = :'m1'),
  jsonb_build_object('id', :'m1', 'kind', 'model', 'status', 'pending', 'error', null),
  'a new model: id, kind, status and error, no output');

-- one webhook, one message (as the service role, which the functions use)
delete from realtime.messages;
set local role service_role;
select public.apply_replicate_event(p_webhook_id => 'w_rt_p1', p_route => 'predict',
  p_replicate_id => 'pr_rt_1', p_status => 'processing', p_job_kind => 'prediction',
  p_job_id => :'p1', p_user_id => :'u1', p_output => '["a"]') as answer \gset
reset role;
select results_eq(
  'select topic, event, extension, private, payload from sent',
  format($$values ('user:%s:jobs', 'job_changed', 'broadcast', true,
                   jsonb_build_object('id', %L, 'kind', 'prediction', 'status', 'processing',
                                      'output', '["a"]'::jsonb, 'error', null))$$, :'u1', :'p1'),
  'a webhook''s change is one private message on the owner''s topic with the job''s state');

delete from realtime.messages;
set local role service_role;
select public.apply_replicate_event('w_rt_p2', 'unified', 'pr_canceled', 'canceled') as answer \gset
select public.apply_replicate_event('w_rt_m2', 'unified', 'tr_failed', 'failed',
  p_error => 'CUDA out of memory') as answer \gset
reset role;
select results_eq(
  $$select payload ->> 'id', payload ->> 'kind', payload ->> 'status', payload ->> 'error'
    from sent order by payload ->> 'kind'$$,
  format($$values (%L, 'model', 'failed', 'CUDA out of memory'), (%L, 'upscale', 'canceled', null)$$,
         :'m2', :'p2'),
  'a failed training and a canceled upscale (refunds and all) are one message each, kind named');

-- nothing the user sees changed: nothing sent
delete from realtime.messages;
set local role service_role;
select public.apply_replicate_event('w_rt_p2', 'unified', 'pr_canceled', 'canceled') as answer \gset
select public.apply_replicate_event('w_rt_p2_late', 'unified', 'pr_canceled', 'processing') as answer \gset
select public.claim_copy('prediction', :'p1', 'rt', 60) as claimed \gset
select public.touch_replicate_job('prediction', :'p4') as touched \gset
reset role;
select is_empty('select * from sent',
  'a duplicate, a stale event, a copy lease and reconcile''s touch send nothing');

-- who may receive: Realtime checks a joining client with its JWT and the topic it joins
set local role service_role;
select public.apply_replicate_event('w_rt_p1_done', 'unified', 'pr_rt_1', 'succeeded',
  p_output => '["s3://b/1.png"]') as answer \gset
select public.apply_replicate_event('w_rt_p4', 'unified', 'pr_text', 'processing') as answer \gset
reset role;
select is((select count(*)::integer from sent), 2, 'two more messages, one per user');

select set_config('realtime.topic', 'user:' || :'u1' || ':jobs', true) as topic \gset
select set_config('request.jwt.claims', format('{"sub": "%s", "role": "authenticated"}', :'u2'), true) as claims \gset
set local role authenticated;
select is_empty('select * from realtime.messages',
  'another signed-in user joining u1''s topic receives nothing');
reset role;

select set_config('request.jwt.claims', format('{"sub": "%s", "role": "authenticated"}', :'u1'), true) as claims \gset
set local role authenticated;
select results_eq('select payload from realtime.messages',
  format($$values (jsonb_build_object('id', %L, 'kind', 'prediction', 'status', 'succeeded',
                                      'output', '["s3://b/1.png"]'::jsonb, 'error', null))$$, :'p1'),
  'u1 joining its own topic receives its message');
reset role;

select set_config('realtime.topic', 'user:' || :'u2' || ':jobs', true) as topic \gset
set local role authenticated;
select is_empty('select * from realtime.messages', 'u1 joining u2''s topic receives nothing');
reset role;

select set_config('realtime.topic', '', true) as topic \gset
set local role authenticated;
select is_empty('select * from realtime.messages', 'without a topic, nothing');
reset role;

select set_config('realtime.topic', 'user:' || :'u1' || ':jobs', true) as topic \gset
select set_config('request.jwt.claims', '{"role": "anon"}', true) as claims \gset
set local role anon;
select is_empty('select * from realtime.messages', 'anon receives nothing');
reset role;

select is(
  (select array_agg(policyname || ' ' || cmd || ' ' || array_to_string(roles, ','))
   from pg_policies where schemaname = 'realtime' and tablename = 'messages'),
  array['job_broadcasts_select_own SELECT authenticated'],
  'one policy on realtime.messages: reading, for authenticated users');
select ok(not has_function_privilege('service_role', 'private.broadcast_job_change()', 'execute'),
  'the trigger function is no RPC');

-- a database without Realtime: the same writes work, nothing is sent
set local client_min_messages = warning;
drop schema realtime cascade;
set local role service_role;
select lives_ok(
  $$select public.apply_replicate_event('w_rt_p5', 'unified', 'pr_other', 'failed', p_error => 'x')$$,
  'without Realtime a webhook is applied all the same');
select lives_ok(
  format($$insert into public.predictions (user_id, credits_cost) values (%L, 1)$$, :'u1'),
  'and a new job is written');
reset role;
select is((select status from public.predictions where replicate_prediction_id = 'pr_other'), 'failed',
  'the change is there');

select * from finish();
rollback;
