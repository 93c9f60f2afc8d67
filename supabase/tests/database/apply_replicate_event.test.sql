-- public.apply_replicate_event, called as the service role (as PostgREST does), through a
-- sequence of deliveries run in order. For every step the answer, the job's row and the
-- webhook_events row are recorded with what the step wrote, then compared with what the
-- step expects: "expect" lists answer keys, and "row", "event" and "wrote" (rows added to
-- webhook_events and credit_ledger) hold the parts of those to compare.
-- (Concurrency, which needs several connections, is covered by the Rust tests in tests/api.)
begin;
\ir ../fixtures/jobs.psql
select plan(42);

create temp table step (
  n          integer primary key,
  webhook_id text,
  route      text,
  rid        text,     -- p_replicate_id
  status     text,     -- p_status
  kind       text,     -- p_job_kind, p_job_id, p_user_id: the row train/predict name
  job_id     uuid,
  user_id    uuid,
  args       jsonb,    -- the other parameters, by name, as PostgREST would pass them
  expect     jsonb,
  setup      text      -- a statement run (as the service role) before the step
);
create temp table seen (n integer primary key, answer jsonb, before jsonb, after jsonb,
                        event jsonb, wrote jsonb);
grant select on step to service_role;
grant insert, select on seen to service_role;

insert into step (n, webhook_id, route, rid, status, kind, job_id, user_id, args, expect) values
  -- predict route: the id is filled in, the output grows, older events are stale
  (1, 'w_p1_start', 'predict', 'pr_1', 'starting', 'prediction', :'p1', :'u1', '{}',
   '{"outcome": "applied", "job": "prediction", "status": "starting", "previous_status": "pending",
     "user_id": "00000000-0000-4000-8000-00000000a001", "refunded": false, "credits_refunded": 0,
     "row": {"replicate_prediction_id": "pr_1"}}'),
  (2, 'w_p1_proc1', 'predict', 'pr_1', 'processing', 'prediction', :'p1', :'u1',
   '{"p_output": ["a"], "p_started_at": "2026-11-24T10:00:01.383588891Z"}',
   '{"outcome": "applied", "status": "processing", "row": {"output": ["a"]}}'),
  (3, 'w_p1_proc2', 'unified', 'pr_1', 'processing', null, null, null,
   '{"p_output": ["a", "b"], "p_metrics": {"predict_time": 1.5}}',
   '{"outcome": "applied", "previous_status": "processing", "row": {"output": ["a", "b"]}}'),
  (4, 'w_p1_proc_old', 'unified', 'pr_1', 'processing', null, null, null, '{"p_output": ["a"]}',
   '{"outcome": "stale", "event": {"outcome": "stale", "detail": "stale: less output than stored"}}'),
  (5, 'w_p1_proc_null', 'unified', 'pr_1', 'processing', null, null, null, '{}', '{"outcome": "stale"}'),
  (6, 'w_p1_proc_jnull', 'unified', 'pr_1', 'processing', null, null, null, '{"p_output": null}',
   '{"outcome": "stale", "row": {"output": ["a", "b"], "metrics": {"predict_time": 1.5},
     "started_at": "2026-11-24T10:00:01.383589+00:00"}}'),
  (7, 'w_p1_start_late', 'unified', 'pr_1', 'starting', null, null, null, '{}',
   '{"outcome": "stale", "status": "processing"}'),
  (8, 'w_p1_done', 'predict', 'pr_1', 'succeeded', 'prediction', :'p1', :'u1',
   '{"p_output": ["s3://b/1.png", "s3://b/2.png"], "p_output_urls": ["s3://b/1.png", "s3://b/2.png"],
     "p_completed_at": "2026-11-24T10:00:09Z"}',
   '{"outcome": "applied", "status": "succeeded", "previous_status": "processing",
     "row": {"status": "succeeded", "output": ["s3://b/1.png", "s3://b/2.png"],
             "output_urls": ["s3://b/1.png", "s3://b/2.png"], "completed_at": "2026-11-24T10:00:09+00:00",
             "refunded_at": null},
     "event": {"outcome": "applied", "detail": "processing -> succeeded"}, "wrote": {"events": 1, "ledger": 0}}'),
  -- after a terminal status nothing changes; a webhook id seen before is a duplicate
  (9, 'w_p1_proc_after', 'unified', 'pr_1', 'processing', null, null, null, '{"p_output": ["a", "b", "c", "d"]}',
   '{"outcome": "stale", "status": "succeeded"}'),
  (10, 'w_p1_failed_after', 'unified', 'pr_1', 'failed', null, null, null, '{"p_error": "boom"}',
   '{"outcome": "stale", "wrote": {"events": 1, "ledger": 0}}'),
  (11, 'w_p1_done_again', 'completed', 'pr_1', 'succeeded', null, null, null, '{"p_output": ["x"]}',
   '{"outcome": "duplicate", "event": {"detail": "duplicate: already succeeded"}}'),
  (12, 'w_p1_done', 'predict', 'pr_1', 'succeeded', 'prediction', :'p1', :'u1', '{"p_output": ["other"]}',
   '{"outcome": "duplicate", "job_id": "00000000-0000-4000-8000-0000000c0001",
     "event": {"outcome": "applied", "detail": "processing -> succeeded"}, "wrote": {"events": 0, "ledger": 0}}'),
  (13, 'w_p1_proc_old', 'unified', 'pr_1', 'processing', null, null, null, '{"p_output": ["a"]}',
   '{"outcome": "duplicate", "event": {"outcome": "stale"}, "wrote": {"events": 0, "ledger": 0}}'),
  -- failed, canceled and aborted refund exactly once
  (14, 'w_m2_failed', 'unified', 'tr_failed', 'failed', null, null, null, '{"p_error": "CUDA out of memory"}',
   '{"outcome": "applied", "job": "model", "status": "failed", "refunded": true, "credits_refunded": 20,
     "row": {"error": "CUDA out of memory"}, "event": {"detail": "pending -> failed; refunded 20"},
     "wrote": {"events": 1, "ledger": 1}}'),
  (15, 'w_m2_failed_2', 'completed', 'tr_failed', 'failed', null, null, null, '{}',
   '{"outcome": "duplicate", "refunded": false, "wrote": {"events": 1, "ledger": 0}}'),
  (16, 'w_m2_canceled', 'unified', 'tr_failed', 'canceled', null, null, null, '{}',
   '{"outcome": "stale", "refunded": false, "wrote": {"events": 1, "ledger": 0}}'),
  (17, 'w_p2_canceled', 'unified', 'pr_canceled', 'canceled', 'prediction', null, null, '{}',
   '{"outcome": "applied", "job": "upscale", "credits_refunded": 3, "wrote": {"events": 1, "ledger": 1}}'),
  (18, 'reconcile:pr_aborted:aborted', 'reconcile', 'pr_aborted', 'aborted', null, null, null,
   '{"p_outcome": "reconciled"}',
   '{"outcome": "reconciled", "job": "upscale", "credits_refunded": 4, "event": {"outcome": "reconciled"}}'),
  (19, 'reconcile:pr_aborted:aborted', 'reconcile', 'pr_aborted', 'aborted', null, null, null,
   '{"p_outcome": "reconciled"}', '{"outcome": "duplicate", "wrote": {"events": 0, "ledger": 0}}'),
  (20, 'w_m3_failed', 'unified', 'tr_free', 'failed', null, null, null, '{}',
   '{"outcome": "applied", "refunded": false, "wrote": {"events": 1, "ledger": 0}}'),
  -- train route: id, version and weights
  (21, 'w_m1_done', 'train', 'tr_1', 'succeeded', 'model', :'m1', :'u1',
   '{"p_output": {"version": "owner/model:abc", "weights": "s3://b/w.tar"},
     "p_version": "owner/model:abc", "p_weights_url": "s3://b/w.tar"}',
   '{"outcome": "applied", "job": "model", "status": "succeeded",
     "row": {"replicate_training_id": "tr_1", "version": "owner/model:abc", "weights_url": "s3://b/w.tar",
             "refunded_at": null}}'),
  -- not found writes nothing: an unknown id, the right row with the wrong user or kind
  (22, 'w_unknown', 'unified', 'nobody', 'failed', null, null, null, '{}',
   '{"outcome": "not_found", "job": null, "job_id": null, "user_id": null, "status": null,
     "previous_status": null, "refunded": false, "credits_refunded": 0, "wrote": {"events": 0, "ledger": 0}}'),
  (23, 'w_wrong_user', 'predict', 'pr_other', 'failed', 'prediction', :'p5', :'u1', '{}',
   '{"outcome": "not_found", "row": {"status": "pending"}, "wrote": {"events": 0, "ledger": 0}}'),
  (24, 'w_wrong_kind', 'predict', 'tr_free', 'failed', 'prediction', :'m3', :'u2', '{}',
   '{"outcome": "not_found", "wrote": {"events": 0, "ledger": 0}}'),
  -- train/predict naming a row that holds another run's id: stale
  (26, 'w_mismatch', 'predict', 'pr_someone_else', 'failed', 'prediction', :'p4', :'u2', '{}',
   '{"outcome": "stale", "refunded": false, "event": {"detail": "stale: replicate id mismatch"}}'),
  -- a row without an id, named with one another row holds (kind null: models, then predictions)
  (27, 'w_taken', 'predict', 'pr_text', 'processing', null, :'p6', :'u2', '{}',
   '{"outcome": "stale", "job_id": "00000000-0000-4000-8000-0000000c0006",
     "event": {"detail": "stale: replicate id belongs to another job"}}'),
  -- text output: never shorter on an output event; the final event's value is taken
  (28, 'w_t1', 'unified', 'pr_text', 'processing', null, null, null, '{"p_output": "Hello wor"}',
   '{"outcome": "applied"}'),
  (29, 'w_t2', 'unified', 'pr_text', 'processing', null, null, null, '{"p_output": "Hello"}',
   '{"outcome": "stale", "row": {"output": "Hello wor"}}'),
  (30, 'w_t3', 'unified', 'pr_text', 'succeeded', null, null, null, '{"p_output": "s3://b/0.txt"}',
   '{"outcome": "applied", "row": {"output": "s3://b/0.txt"}}');

-- once the row knows the id, a retry of the delivery that was not found applies
insert into step (n, webhook_id, route, rid, status, args, expect, setup) values
  (25, 'w_unknown', 'unified', 'nobody', 'failed', '{}',
   '{"outcome": "applied", "refunded": true, "wrote": {"events": 1, "ledger": 1}}',
   $$update public.predictions set replicate_prediction_id = 'nobody' where id = '00000000-0000-4000-8000-0000000c0005'$$);

set local role service_role;
do $$
declare
  s step;
  v_answer jsonb;
  v_job uuid;
  v_before jsonb;
  v_counts integer[];
begin
  for s in select * from step order by n loop
    if s.setup is not null then
      execute s.setup;
    end if;
    v_job := coalesce(s.job_id, (select j.id from private.jobs j where j.replicate_id = s.rid));
    v_before := coalesce((select to_jsonb(j) from public.models j where j.id = v_job),
                         (select to_jsonb(j) from public.predictions j where j.id = v_job));
    v_counts := array[(select count(*) from public.webhook_events), (select count(*) from public.credit_ledger)];

    select public.apply_replicate_event(
      p_webhook_id => s.webhook_id, p_route => s.route, p_replicate_id => s.rid, p_status => s.status,
      p_job_kind => s.kind, p_job_id => s.job_id, p_user_id => s.user_id,
      p_output => a.p_output, p_output_urls => a.p_output_urls, p_weights_url => a.p_weights_url,
      p_version => a.p_version, p_error => a.p_error, p_metrics => a.p_metrics,
      p_started_at => a.p_started_at, p_completed_at => a.p_completed_at,
      p_outcome => coalesce(a.p_outcome, 'applied'))
    into v_answer
    from jsonb_to_record(s.args) as a(
      p_output jsonb, p_output_urls text[], p_weights_url text, p_version text, p_error text,
      p_metrics jsonb, p_started_at timestamptz, p_completed_at timestamptz, p_outcome text);

    insert into seen values (s.n, v_answer, v_before,
      coalesce((select to_jsonb(j) from public.models j where j.id = v_job),
               (select to_jsonb(j) from public.predictions j where j.id = v_job)),
      (select to_jsonb(e) from public.webhook_events e where e.webhook_id = s.webhook_id),
      jsonb_build_object('events', (select count(*) from public.webhook_events) - v_counts[1],
                         'ledger', (select count(*) from public.credit_ledger) - v_counts[2]));
  end loop;
end;
$$;
reset role;

-- 30 steps: the parts of what each one answered, left in its row and recorded
select is(
  (select jsonb_object_agg(k, case k when 'row' then (select jsonb_object_agg(f, x.after -> f) from jsonb_object_keys(s.expect -> k) f)
                                     when 'event' then (select jsonb_object_agg(f, x.event -> f) from jsonb_object_keys(s.expect -> k) f)
                                     when 'wrote' then x.wrote
                                     else x.answer -> k end)
   from jsonb_object_keys(s.expect) k),
  s.expect,
  format('step %s: %s %s %s', s.n, s.route, s.status, s.webhook_id))
from step s join seen x using (n)
order by n;

select is(
  (select array_agg(n order by n) from seen
   where answer ->> 'outcome' in ('stale', 'duplicate', 'not_found') and after is distinct from before),
  null, 'stale, duplicate and not_found change no row');
select is((select count(*)::integer from seen where answer ->> 'outcome' = 'not_found' and event is not null), 0,
  'not_found records no delivery');
select is((select (after ->> 'completed_at')::timestamptz from seen where n = 21), now(),
  'a terminal event without completed_at completes the job now');
select isnt((select after ->> 'refunded_at' from seen where n = 14), null, 'the refunded model has refunded_at');
select isnt((select after ->> 'completed_at' from seen where n = 14), null, 'the failed model is completed');
select is(
  (select array_agg(delta order by delta) from public.credit_ledger
   where reason = 'refund' and coalesce(model_id, prediction_id) in (:'m2', :'p2', :'p3', :'p5', :'p1', :'m3')),
  array[1, 3, 4, 20], 'one refund row per refunded job, of its cost');
select is(
  (select count(*)::integer from public.predictions where refunded_at is not null and id in (:'p2', :'p3', :'p5')), 3,
  'refunded predictions have refunded_at');

-- bad input is refused before anything is looked up
set local role service_role;
select throws_ok(
  $$select public.apply_replicate_event('w_bad', 'unified', 'pr_other', 'exploded')$$,
  '22023', 'unknown status: exploded', 'an unknown status is refused');
select throws_ok(
  $$select public.apply_replicate_event('w_bad', 'unified', 'pr_other', null)$$,
  '22023', 'unknown status: null', 'a missing status is refused');
select throws_ok(
  $$select public.apply_replicate_event(p_webhook_id => 'w_bad', p_route => 'unified',
      p_replicate_id => 'pr_other', p_status => 'failed', p_outcome => 'duplicate')$$,
  '22023', 'p_outcome must be applied or reconciled', 'p_outcome duplicate is refused');
select throws_ok(
  $$select public.apply_replicate_event(p_webhook_id => 'w_bad', p_route => 'unified',
      p_replicate_id => 'pr_other', p_status => 'failed', p_job_kind => 'dataset')$$,
  '22023', 'unknown job kind: dataset', 'an unknown job kind is refused');
select throws_ok(
  $$select public.apply_replicate_event(' ', 'unified', 'pr_other', 'failed')$$,
  '22023', 'p_webhook_id is required', 'a blank webhook id is refused');
reset role;

select * from finish();
rollback;
