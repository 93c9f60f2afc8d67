-- Tests for supabase/migrations/20261124000000_replicate_jobs.sql.
--
-- Run against a database where the migration has been applied, as a superuser (or a role
-- that may SET ROLE to anon, authenticated and service_role):
--   psql "$DATABASE_URL" -X -q -f supabase/tests/apply_replicate_event.sql
-- Everything runs in one transaction that is rolled back, so the database is left as it was.
-- Any failed assertion stops the script with a non-zero exit status.
-- (Concurrency, which needs several connections, is not covered here.)

\set ON_ERROR_STOP on

begin;

-- Fixtures (as the migration owner) ------------------------------------------------------

insert into public.profiles (id, email) values
  ('00000000-0000-4000-8000-00000000a001', 'one@example.test'),
  ('00000000-0000-4000-8000-00000000a002', 'two@example.test');

insert into public.models (id, user_id, credits_cost, replicate_training_id) values
  ('00000000-0000-4000-8000-0000000b0001', '00000000-0000-4000-8000-00000000a001', 20, null),
  ('00000000-0000-4000-8000-0000000b0002', '00000000-0000-4000-8000-00000000a001', 20, 'test_tr_failed'),
  ('00000000-0000-4000-8000-0000000b0003', '00000000-0000-4000-8000-00000000a002', 0,  'test_tr_free');

insert into public.predictions (id, user_id, kind, prompt, credits_cost, replicate_prediction_id) values
  ('00000000-0000-4000-8000-0000000c0001', '00000000-0000-4000-8000-00000000a001', 'generation', 'a cat', 5, null),
  ('00000000-0000-4000-8000-0000000c0002', '00000000-0000-4000-8000-00000000a001', 'upscale', 'x', 3, 'test_pr_canceled'),
  ('00000000-0000-4000-8000-0000000c0003', '00000000-0000-4000-8000-00000000a002', 'generation', '[UPSCALED] y', 4, 'test_pr_aborted'),
  ('00000000-0000-4000-8000-0000000c0004', '00000000-0000-4000-8000-00000000a002', 'generation', 'text', 1, 'test_pr_text'),
  ('00000000-0000-4000-8000-0000000c0005', '00000000-0000-4000-8000-00000000a002', 'generation', 'other', 1, 'test_pr_other'),
  ('00000000-0000-4000-8000-0000000c0006', '00000000-0000-4000-8000-00000000a002', 'generation', 'no id yet', 1, null);

-- Every call below goes through the service role, as PostgREST does.
set local role service_role;

-- In-order progress through the predict route, id filled in, output growing -----------------
do $$
declare r jsonb; p public.predictions;
begin
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_start', p_route => 'predict', p_replicate_id => 'test_pr_1',
    p_status => 'starting', p_job_kind => 'prediction',
    p_job_id => '00000000-0000-4000-8000-0000000c0001',
    p_user_id => '00000000-0000-4000-8000-00000000a001');
  assert r->>'outcome' = 'applied', 'start: ' || r::text;
  assert r->>'job' = 'prediction' and r->>'status' = 'starting' and r->>'previous_status' = 'pending', r::text;
  assert r->>'user_id' = '00000000-0000-4000-8000-00000000a001', r::text;
  assert (r->>'refunded')::boolean = false and (r->>'credits_refunded')::int = 0, r::text;
  select * into p from public.predictions where id = '00000000-0000-4000-8000-0000000c0001';
  assert p.replicate_prediction_id = 'test_pr_1', 'replicate id not filled in';

  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_proc1', p_route => 'predict', p_replicate_id => 'test_pr_1',
    p_status => 'processing', p_job_kind => 'prediction',
    p_job_id => '00000000-0000-4000-8000-0000000c0001',
    p_user_id => '00000000-0000-4000-8000-00000000a001',
    p_output => '["a"]', p_started_at => '2026-11-24T10:00:01.383588891Z');
  assert r->>'outcome' = 'applied' and r->>'status' = 'processing', 'processing: ' || r::text;

  -- an output event with more output
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_proc2', p_route => 'unified', p_replicate_id => 'test_pr_1',
    p_status => 'processing', p_output => '["a","b"]', p_metrics => '{"predict_time": 1.5}');
  assert r->>'outcome' = 'applied' and r->>'previous_status' = 'processing', 'more output: ' || r::text;

  -- an older output event (less output) and one without output: stale, nothing changes
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_proc_old', p_route => 'unified', p_replicate_id => 'test_pr_1',
    p_status => 'processing', p_output => '["a"]');
  assert r->>'outcome' = 'stale', 'less output: ' || r::text;
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_proc_null', p_route => 'unified', p_replicate_id => 'test_pr_1',
    p_status => 'processing', p_output => null);
  assert r->>'outcome' = 'stale', 'null output: ' || r::text;
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_proc_jnull', p_route => 'unified', p_replicate_id => 'test_pr_1',
    p_status => 'processing', p_output => 'null'::jsonb);
  assert r->>'outcome' = 'stale', 'json null output: ' || r::text;
  select * into p from public.predictions where id = '00000000-0000-4000-8000-0000000c0001';
  assert p.output = '["a","b"]'::jsonb, 'output shrank: ' || p.output::text;
  assert p.metrics = '{"predict_time": 1.5}'::jsonb, 'metrics';
  assert p.started_at = '2026-11-24T10:00:01.383589Z'::timestamptz, 'started_at ' || p.started_at;

  -- a starting event after processing: stale
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_start_late', p_route => 'unified', p_replicate_id => 'test_pr_1',
    p_status => 'starting');
  assert r->>'outcome' = 'stale' and r->>'status' = 'processing', 'late start: ' || r::text;

  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_done', p_route => 'predict', p_replicate_id => 'test_pr_1',
    p_status => 'succeeded', p_job_kind => 'prediction',
    p_job_id => '00000000-0000-4000-8000-0000000c0001',
    p_user_id => '00000000-0000-4000-8000-00000000a001',
    p_output => '["s3://b/1.png","s3://b/2.png"]',
    p_output_urls => array['s3://b/1.png', 's3://b/2.png'],
    p_completed_at => '2026-11-24T10:00:09Z');
  assert r->>'outcome' = 'applied' and r->>'status' = 'succeeded' and r->>'previous_status' = 'processing',
    'succeeded: ' || r::text;
  select * into p from public.predictions where id = '00000000-0000-4000-8000-0000000c0001';
  assert p.status = 'succeeded' and p.output = '["s3://b/1.png","s3://b/2.png"]'::jsonb, 'final row';
  assert p.output_urls = array['s3://b/1.png', 's3://b/2.png'], 'output_urls';
  assert p.completed_at = '2026-11-24T10:00:09Z'::timestamptz, 'completed_at';
  assert p.refunded_at is null, 'no refund on success';
  assert (select outcome from public.webhook_events where webhook_id = 'test_w_p1_done') = 'applied', 'event row';
  assert (select detail from public.webhook_events where webhook_id = 'test_w_p1_done') = 'processing -> succeeded',
    'event detail';
  assert (select outcome from public.webhook_events where webhook_id = 'test_w_p1_proc_old') = 'stale', 'stale row';
end;
$$;

-- After a terminal status nothing changes; the same webhook id twice is a duplicate ---------
do $$
declare r jsonb; before jsonb; n_events int;
begin
  select to_jsonb(p) into before from public.predictions p where id = '00000000-0000-4000-8000-0000000c0001';

  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_proc_after', p_route => 'unified', p_replicate_id => 'test_pr_1',
    p_status => 'processing', p_output => '["a","b","c","d"]');
  assert r->>'outcome' = 'stale' and r->>'status' = 'succeeded', 'processing after terminal: ' || r::text;

  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_failed_after', p_route => 'unified', p_replicate_id => 'test_pr_1',
    p_status => 'failed', p_error => 'boom');
  assert r->>'outcome' = 'stale', 'failed after succeeded: ' || r::text;

  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_done_again', p_route => 'completed', p_replicate_id => 'test_pr_1',
    p_status => 'succeeded', p_output => '["x"]');
  assert r->>'outcome' = 'duplicate', 'same terminal status, new id: ' || r::text;

  select count(*) into n_events from public.webhook_events;
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_done', p_route => 'predict', p_replicate_id => 'test_pr_1',
    p_status => 'succeeded', p_job_kind => 'prediction',
    p_job_id => '00000000-0000-4000-8000-0000000c0001',
    p_user_id => '00000000-0000-4000-8000-00000000a001', p_output => '["other"]');
  assert r->>'outcome' = 'duplicate' and r->>'job_id' = '00000000-0000-4000-8000-0000000c0001',
    'same webhook id: ' || r::text;
  -- a repeated id is a duplicate even when its first delivery was stale
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p1_proc_old', p_route => 'unified', p_replicate_id => 'test_pr_1',
    p_status => 'processing', p_output => '["a"]');
  assert r->>'outcome' = 'duplicate', 'repeated stale id: ' || r::text;
  assert (select count(*) from public.webhook_events) = n_events, 'duplicate wrote an event row';
  assert (select outcome from public.webhook_events where webhook_id = 'test_w_p1_done') = 'applied',
    'duplicate rewrote the first event row';

  assert (select to_jsonb(p) from public.predictions p where id = '00000000-0000-4000-8000-0000000c0001') = before,
    'terminal row changed';
  assert not exists (select 1 from public.credit_ledger where prediction_id = '00000000-0000-4000-8000-0000000c0001'),
    'refund after success';
end;
$$;

-- failed / canceled / aborted refund exactly once -------------------------------------------
do $$
declare r jsonb; m public.models;
begin
  -- a training fails (unified route finds it by training id)
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_m2_failed', p_route => 'unified', p_replicate_id => 'test_tr_failed',
    p_status => 'failed', p_error => 'CUDA out of memory');
  assert r->>'outcome' = 'applied' and r->>'job' = 'model' and r->>'status' = 'failed', 'model failed: ' || r::text;
  assert (r->>'refunded')::boolean and (r->>'credits_refunded')::int = 20, 'model refund: ' || r::text;
  select * into m from public.models where id = '00000000-0000-4000-8000-0000000b0002';
  assert m.refunded_at is not null and m.error = 'CUDA out of memory' and m.completed_at is not null, 'model row';
  assert (select detail from public.webhook_events where webhook_id = 'test_w_m2_failed')
    = 'pending -> failed; refunded 20', 'refund detail';

  -- the same terminal event again with other ids, and through the completed route
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_m2_failed_2', p_route => 'completed', p_replicate_id => 'test_tr_failed',
    p_status => 'failed');
  assert r->>'outcome' = 'duplicate' and not (r->>'refunded')::boolean, 'second failed: ' || r::text;
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_m2_canceled', p_route => 'unified', p_replicate_id => 'test_tr_failed',
    p_status => 'canceled');
  assert r->>'outcome' = 'stale' and not (r->>'refunded')::boolean, 'canceled after failed: ' || r::text;
  assert (select count(*) from public.credit_ledger
          where model_id = '00000000-0000-4000-8000-0000000b0002') = 1, 'model refunded twice';
  assert (select delta from public.credit_ledger
          where model_id = '00000000-0000-4000-8000-0000000b0002') = 20, 'refund delta';

  -- canceled upscale (kind) through the job-kind-restricted lookup
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_p2_canceled', p_route => 'unified', p_replicate_id => 'test_pr_canceled',
    p_status => 'canceled', p_job_kind => 'prediction');
  assert r->>'outcome' = 'applied' and r->>'job' = 'upscale' and (r->>'credits_refunded')::int = 3,
    'canceled: ' || r::text;

  -- aborted upscale (prompt prefix), reached by reconcile
  r := public.apply_replicate_event(
    p_webhook_id => 'reconcile:test_pr_aborted:aborted', p_route => 'reconcile',
    p_replicate_id => 'test_pr_aborted', p_status => 'aborted', p_outcome => 'reconciled');
  assert r->>'outcome' = 'reconciled' and r->>'job' = 'upscale' and (r->>'credits_refunded')::int = 4,
    'aborted: ' || r::text;
  assert (select outcome from public.webhook_events where webhook_id = 'reconcile:test_pr_aborted:aborted')
    = 'reconciled', 'reconciled event row';
  r := public.apply_replicate_event(
    p_webhook_id => 'reconcile:test_pr_aborted:aborted', p_route => 'reconcile',
    p_replicate_id => 'test_pr_aborted', p_status => 'aborted', p_outcome => 'reconciled');
  assert r->>'outcome' = 'duplicate', 'second reconcile: ' || r::text;

  assert (select count(*) from public.credit_ledger where prediction_id in
          ('00000000-0000-4000-8000-0000000c0002', '00000000-0000-4000-8000-0000000c0003')) = 2,
    'prediction refunds';
  assert (select count(*) from public.predictions where refunded_at is not null and id in
          ('00000000-0000-4000-8000-0000000c0002', '00000000-0000-4000-8000-0000000c0003')) = 2,
    'refunded_at';

  -- nothing to refund when the job cost nothing
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_m3_failed', p_route => 'unified', p_replicate_id => 'test_tr_free',
    p_status => 'failed');
  assert r->>'outcome' = 'applied' and not (r->>'refunded')::boolean, 'free job: ' || r::text;
  assert not exists (select 1 from public.credit_ledger where model_id = '00000000-0000-4000-8000-0000000b0003'),
    'refund of a free job';
end;
$$;

-- Training through the train route: id, version and weights ---------------------------------
do $$
declare r jsonb; m public.models;
begin
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_m1_done', p_route => 'train', p_replicate_id => 'test_tr_1',
    p_status => 'succeeded', p_job_kind => 'model',
    p_job_id => '00000000-0000-4000-8000-0000000b0001',
    p_user_id => '00000000-0000-4000-8000-00000000a001',
    p_output => '{"version": "owner/model:abc", "weights": "s3://b/w.tar"}',
    p_version => 'owner/model:abc', p_weights_url => 's3://b/w.tar');
  assert r->>'outcome' = 'applied' and r->>'job' = 'model' and r->>'status' = 'succeeded', 'train: ' || r::text;
  select * into m from public.models where id = '00000000-0000-4000-8000-0000000b0001';
  assert m.replicate_training_id = 'test_tr_1' and m.version = 'owner/model:abc'
     and m.weights_url = 's3://b/w.tar' and m.completed_at = now() and m.refunded_at is null, 'model row';
end;
$$;

-- Not found writes nothing -------------------------------------------------------------------
do $$
declare r jsonb; n_events int; n_ledger int;
begin
  select count(*) into n_events from public.webhook_events;
  select count(*) into n_ledger from public.credit_ledger;

  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_unknown', p_route => 'unified', p_replicate_id => 'test_nobody',
    p_status => 'failed');
  assert r = jsonb_build_object('outcome', 'not_found', 'job', null, 'job_id', null, 'user_id', null,
    'status', null, 'previous_status', null, 'refunded', false, 'credits_refunded', 0), 'unknown: ' || r::text;

  -- the right row with the wrong user
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_wrong_user', p_route => 'predict', p_replicate_id => 'test_pr_other',
    p_status => 'failed', p_job_kind => 'prediction',
    p_job_id => '00000000-0000-4000-8000-0000000c0005',
    p_user_id => '00000000-0000-4000-8000-00000000a001');
  assert r->>'outcome' = 'not_found', 'wrong user: ' || r::text;
  -- a model id given as a prediction
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_wrong_kind', p_route => 'predict', p_replicate_id => 'test_tr_free',
    p_status => 'failed', p_job_kind => 'prediction',
    p_job_id => '00000000-0000-4000-8000-0000000b0003',
    p_user_id => '00000000-0000-4000-8000-00000000a002');
  assert r->>'outcome' = 'not_found', 'wrong kind: ' || r::text;

  assert (select count(*) from public.webhook_events) = n_events, 'not_found wrote an event row';
  assert (select count(*) from public.credit_ledger) = n_ledger, 'not_found wrote a ledger row';
  assert (select status from public.predictions where id = '00000000-0000-4000-8000-0000000c0005') = 'pending',
    'not_found changed a row';

  -- once the row knows the id, a retry of the same delivery applies
  update public.predictions set replicate_prediction_id = 'test_nobody'
    where id = '00000000-0000-4000-8000-0000000c0005';
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_unknown', p_route => 'unified', p_replicate_id => 'test_nobody',
    p_status => 'failed');
  assert r->>'outcome' = 'applied' and (r->>'refunded')::boolean, 'retry after not_found: ' || r::text;
end;
$$;

-- Replicate id mismatch on train/predict: stale, nothing changes ----------------------------
do $$
declare r jsonb; before jsonb;
begin
  select to_jsonb(p) into before from public.predictions p where id = '00000000-0000-4000-8000-0000000c0004';
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_mismatch', p_route => 'predict', p_replicate_id => 'test_pr_someone_else',
    p_status => 'failed', p_job_kind => 'prediction',
    p_job_id => '00000000-0000-4000-8000-0000000c0004',
    p_user_id => '00000000-0000-4000-8000-00000000a002');
  assert r->>'outcome' = 'stale' and not (r->>'refunded')::boolean, 'mismatch: ' || r::text;
  assert (select detail from public.webhook_events where webhook_id = 'test_w_mismatch') = 'stale: replicate id mismatch',
    'mismatch detail';
  assert (select to_jsonb(p) from public.predictions p where id = '00000000-0000-4000-8000-0000000c0004') = before,
    'mismatch changed the row';

  -- a row without a Replicate id, named with an id another row already holds (kind left
  -- null: the job id is looked up in models, then predictions): stale, nothing changes
  select to_jsonb(p) into before from public.predictions p where id = '00000000-0000-4000-8000-0000000c0006';
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_taken', p_route => 'predict', p_replicate_id => 'test_pr_text',
    p_status => 'processing', p_job_id => '00000000-0000-4000-8000-0000000c0006',
    p_user_id => '00000000-0000-4000-8000-00000000a002');
  assert r->>'outcome' = 'stale' and r->>'job_id' = '00000000-0000-4000-8000-0000000c0006', 'taken id: ' || r::text;
  assert (select detail from public.webhook_events where webhook_id = 'test_w_taken')
    = 'stale: replicate id belongs to another job', 'taken id detail';
  assert (select to_jsonb(p) from public.predictions p where id = '00000000-0000-4000-8000-0000000c0006') = before,
    'taken id changed the row';
end;
$$;

-- Text output: never shorter on an output event; the final event's value is taken -----------
do $$
declare r jsonb;
begin
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_t1', p_route => 'unified', p_replicate_id => 'test_pr_text',
    p_status => 'processing', p_output => '"Hello wor"');
  assert r->>'outcome' = 'applied', 't1: ' || r::text;
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_t2', p_route => 'unified', p_replicate_id => 'test_pr_text',
    p_status => 'processing', p_output => '"Hello"');
  assert r->>'outcome' = 'stale', 't2: ' || r::text;
  assert (select output from public.predictions where id = '00000000-0000-4000-8000-0000000c0004') = '"Hello wor"',
    'text shrank';
  r := public.apply_replicate_event(
    p_webhook_id => 'test_w_t3', p_route => 'unified', p_replicate_id => 'test_pr_text',
    p_status => 'succeeded', p_output => '"s3://b/0.txt"');
  assert r->>'outcome' = 'applied', 't3: ' || r::text;
  assert (select output from public.predictions where id = '00000000-0000-4000-8000-0000000c0004') = '"s3://b/0.txt"',
    'final output not taken';
end;
$$;

-- Read helpers ------------------------------------------------------------------------------
do $$
declare r jsonb; n int;
begin
  r := public.find_replicate_job('test_tr_1');
  assert r = jsonb_build_object('job', 'model', 'job_id', '00000000-0000-4000-8000-0000000b0001',
    'user_id', '00000000-0000-4000-8000-00000000a001', 'status', 'succeeded', 'replicate_id', 'test_tr_1'),
    'find model: ' || r::text;
  r := public.find_replicate_job('test_pr_canceled');
  assert r->>'job' = 'upscale' and r->>'status' = 'canceled', 'find upscale: ' || r::text;
  r := public.find_replicate_job(p_replicate_id => 'whatever', p_job_kind => 'prediction',
    p_job_id => '00000000-0000-4000-8000-0000000c0005', p_user_id => '00000000-0000-4000-8000-00000000a002');
  assert r->>'job' = 'prediction' and r->>'replicate_id' = 'test_nobody', 'find by job id: ' || r::text;
  assert public.find_replicate_job('test_nobody_at_all') is null, 'find unknown';
  assert public.find_replicate_job(p_replicate_id => null, p_job_kind => 'model',
    p_job_id => '00000000-0000-4000-8000-0000000b0001', p_user_id => '00000000-0000-4000-8000-00000000a002') is null,
    'find with the wrong user';
  assert public.find_replicate_job('test_tr_1', 'prediction') is null, 'find restricted to predictions';
end;
$$;

-- Reconcile list and touch; updated_at moves on every update ----------------------------------
reset role;
insert into public.predictions (id, user_id, status, replicate_prediction_id, created_at, updated_at) values
  ('00000000-0000-4000-8000-0000000d0001', '00000000-0000-4000-8000-00000000a001', 'processing', 'test_rc_1',
   now() - interval '2 hours', now() - interval '10 minutes'),
  ('00000000-0000-4000-8000-0000000d0002', '00000000-0000-4000-8000-00000000a001', 'pending', 'test_rc_2',
   now() - interval '2 hours', now() - interval '20 minutes'),
  ('00000000-0000-4000-8000-0000000d0003', '00000000-0000-4000-8000-00000000a001', 'starting', null,
   now() - interval '2 hours', now() - interval '30 minutes'),
  ('00000000-0000-4000-8000-0000000d0004', '00000000-0000-4000-8000-00000000a001', 'processing', 'test_rc_4',
   now() - interval '3 days', now() - interval '3 days'),
  ('00000000-0000-4000-8000-0000000d0005', '00000000-0000-4000-8000-00000000a001', 'succeeded', 'test_rc_5',
   now() - interval '2 hours', now() - interval '40 minutes'),
  ('00000000-0000-4000-8000-0000000d0006', '00000000-0000-4000-8000-00000000a001', 'processing', 'test_rc_6',
   now() - interval '2 hours', now() - interval '30 seconds');
insert into public.models (id, user_id, status, replicate_training_id, created_at, updated_at) values
  ('00000000-0000-4000-8000-0000000d0007', '00000000-0000-4000-8000-00000000a002', 'starting', 'test_rc_7',
   now() - interval '2 hours', now() - interval '15 minutes');
set local role service_role;

do $$
declare ids text[]; kinds text[];
begin
  -- older than 120 s, created within a day; other rows of the database may be listed too
  select array_agg(replicate_id order by ord), array_agg(job order by ord) into ids, kinds
  from (select s.*, row_number() over () as ord from public.stale_replicate_jobs(120, 86400, 1000) s) x
  where replicate_id like 'test_rc_%';
  assert ids = array['test_rc_2', 'test_rc_7', 'test_rc_1'], 'stale list: ' || ids::text;
  assert kinds = array['prediction', 'model', 'prediction'], 'stale kinds: ' || kinds::text;

  assert (select count(*) from public.stale_replicate_jobs(120, 86400, 1)) = 1, 'limit';
  assert exists (select 1 from public.stale_replicate_jobs(120, null, 1000) where replicate_id = 'test_rc_4'),
    'no age limit';

  perform public.touch_replicate_job('prediction', '00000000-0000-4000-8000-0000000d0002');
  perform public.touch_replicate_job('model', '00000000-0000-4000-8000-0000000d0007');
  assert (select updated_at from public.predictions where id = '00000000-0000-4000-8000-0000000d0002') = now(),
    'touch prediction';
  assert not exists (select 1 from public.stale_replicate_jobs(120, 86400, 1000)
                     where replicate_id in ('test_rc_2', 'test_rc_7')), 'touched jobs still listed';

  -- any applied event moves updated_at
  perform public.apply_replicate_event(
    p_webhook_id => 'test_w_rc_1', p_route => 'unified', p_replicate_id => 'test_rc_1',
    p_status => 'processing', p_output => '["x"]');
  assert (select updated_at from public.predictions where id = '00000000-0000-4000-8000-0000000d0001') = now(),
    'updated_at not moved';
end;
$$;

-- The ledger's own guarantees, whatever the calling code does --------------------------------
do $$
begin
  begin
    insert into public.credit_ledger (user_id, delta, reason, model_id)
      values ('00000000-0000-4000-8000-00000000a001', 20, 'refund', '00000000-0000-4000-8000-0000000b0002');
    raise exception 'second refund row accepted';
  exception when unique_violation then null;
  end;
  begin
    insert into public.credit_ledger (user_id, delta, reason)
      values ('00000000-0000-4000-8000-00000000a001', 20, 'refund');
    raise exception 'refund row without a job accepted';
  exception when check_violation then null;
  end;
  begin
    insert into public.credit_ledger (user_id, delta, reason, model_id, prediction_id)
      values ('00000000-0000-4000-8000-00000000a001', 20, 'refund',
              '00000000-0000-4000-8000-0000000b0001', '00000000-0000-4000-8000-0000000c0001');
    raise exception 'refund row with two jobs accepted';
  exception when check_violation then null;
  end;
  -- a purchase row names no job
  insert into public.credit_ledger (user_id, delta, reason)
    values ('00000000-0000-4000-8000-00000000a001', 100, 'purchase');
  -- a refunded job can still be deleted; its refund row stays
  delete from public.models where id = '00000000-0000-4000-8000-0000000b0002';
  assert (select count(*) from public.credit_ledger
          where reason = 'refund' and model_id is null and prediction_id is null and delta = 20) = 1,
    'refund row of a deleted job';
end;
$$;

-- Input checks --------------------------------------------------------------------------------
do $$
begin
  begin
    perform public.apply_replicate_event(p_webhook_id => 'test_w_bad', p_route => 'unified',
      p_replicate_id => 'test_pr_other', p_status => 'exploded');
    raise exception 'unknown status accepted';
  exception when invalid_parameter_value then null;
  end;
  begin
    perform public.apply_replicate_event(p_webhook_id => 'test_w_bad', p_route => 'unified',
      p_replicate_id => 'test_pr_other', p_status => 'failed', p_outcome => 'duplicate');
    raise exception 'p_outcome duplicate accepted';
  exception when invalid_parameter_value then null;
  end;
end;
$$;

-- Privileges: anon and authenticated write nothing, read only their own rows ------------------
reset role;
do $$
declare
  t text;
  who text;
  stmt text;
  ok boolean;
begin
  foreach who in array array['anon', 'authenticated'] loop
    foreach t in array array['profiles', 'models', 'predictions', 'credit_ledger', 'webhook_events'] loop
      foreach stmt in array array[
        case t
          when 'profiles' then $s$insert into public.profiles (id) values (gen_random_uuid())$s$
          when 'models' then $s$insert into public.models (user_id) values ('00000000-0000-4000-8000-00000000a001')$s$
          when 'predictions' then $s$insert into public.predictions (user_id) values ('00000000-0000-4000-8000-00000000a001')$s$
          when 'credit_ledger' then $s$insert into public.credit_ledger (user_id, delta, reason) values ('00000000-0000-4000-8000-00000000a001', 1000, 'gift')$s$
          else $s$insert into public.webhook_events (webhook_id, route, outcome) values ('x', 'x', 'applied')$s$
        end,
        format('update public.%I set %I = %I', t,
               case t when 'webhook_events' then 'detail' when 'profiles' then 'email' else 'user_id' end,
               case t when 'webhook_events' then 'detail' when 'profiles' then 'email' else 'user_id' end),
        format('delete from public.%I', t),
        format('truncate public.%I cascade', t)
      ] loop
        ok := false;
        begin
          execute format('set local role %I', who);
          execute stmt;
        exception when insufficient_privilege then ok := true;
        end;
        execute 'reset role';
        assert ok, who || ' could run: ' || stmt;
      end loop;
    end loop;

    foreach stmt in array array[
      $s$select public.apply_replicate_event('test_w_x', 'unified', 'test_pr_other', 'failed')$s$,
      $s$select public.find_replicate_job('test_pr_other')$s$,
      $s$select * from public.stale_replicate_jobs(0, null, 10)$s$,
      $s$select public.touch_replicate_job('prediction', '00000000-0000-4000-8000-0000000c0005')$s$
    ] loop
      ok := false;
      begin
        execute format('set local role %I', who);
        execute stmt;
      exception when insufficient_privilege then ok := true;
      end;
      execute 'reset role';
      assert ok, who || ' could run: ' || stmt;
    end loop;
  end loop;

  -- anon reads nothing at all
  foreach t in array array['profiles', 'models', 'predictions', 'credit_ledger', 'webhook_events'] loop
    ok := false;
    begin
      set local role anon;
      execute format('select count(*) from public.%I', t);
    exception when insufficient_privilege then ok := true;
    end;
    reset role;
    assert ok, 'anon could read ' || t;
  end loop;
end;
$$;

-- authenticated sees only its own rows (user id from auth.uid() or the JWT claims)
do $$
begin
  perform set_config('request.jwt.claims',
    '{"sub":"00000000-0000-4000-8000-00000000a002","role":"authenticated"}', true);
  perform set_config('request.jwt.claim.sub', '00000000-0000-4000-8000-00000000a002', true);
end;
$$;
set local role authenticated;
do $$
begin
  assert (select count(*) from public.profiles) = 1, 'profiles visible';
  assert (select count(*) from public.models) = 2
     and (select bool_and(user_id = '00000000-0000-4000-8000-00000000a002') from public.models), 'models visible';
  assert (select count(*) from public.predictions) = 4
     and (select bool_and(user_id = '00000000-0000-4000-8000-00000000a002') from public.predictions), 'predictions visible';
  assert (select count(*) from public.credit_ledger) = 2
     and (select bool_and(user_id = '00000000-0000-4000-8000-00000000a002') from public.credit_ledger), 'ledger visible';
  begin
    perform count(*) from public.webhook_events;
    raise exception 'authenticated could read webhook_events';
  exception when insufficient_privilege then null;
  end;
end;
$$;
reset role;

\echo 'apply_replicate_event tests: all passed'
rollback;
