-- What health's "recent" block reads: rejected requests counted per route, reason and
-- minute (record_webhook_rejection), the whole block in one call (recent_activity), and
-- retention (prune_webhook_history) deleting old rows in bounded batches.
begin;
\ir ../fixtures/jobs.psql
select plan(17);

-- Start from nothing, whatever ran before (rolled back at the end).
delete from public.webhook_events;
delete from private.webhook_rejections;

set local role service_role;

-- counting
select public.record_webhook_rejection('predict', 'signature');
select public.record_webhook_rejection('predict', 'signature');
select public.record_webhook_rejection('predict', 'too_large');
select public.record_webhook_rejection('unified', 'signature');
select results_eq(
  $$select route, reason, count from private.webhook_rejections order by route, reason$$,
  $$values ('predict'::text, 'signature'::text, 2::bigint), ('predict', 'too_large', 1),
           ('unified', 'signature', 1)$$,
  'two rejections of a route for a reason in one minute are one row counting 2');
select is((select minute from private.webhook_rejections limit 1), date_trunc('minute', now()),
  'the row is the minute''s');
select throws_ok($$select public.record_webhook_rejection('predict', 'because')$$, '23514', null,
  'an unknown reason is refused');
select throws_ok($$select public.record_webhook_rejection('predict?user_id=x', 'signature')$$, '23514', null,
  'a route is a name, nothing more');

-- the recent block: an empty history
reset role;
delete from private.webhook_rejections;
set local role service_role;
select is(public.recent_activity(),
  jsonb_build_object('window_seconds', 3600, 'last_delivery_at', null,
    'deliveries', '{"applied": 0, "stale": 0, "ignored": 0}'::jsonb,
    'rejected', '{"method": 0, "too_large": 0, "signature": 0, "bad_request": 0, "not_found": 0, "unavailable": 0}'::jsonb,
    'stuck_jobs', 0, 'reconciled_24h', 0, 'expired_outputs_24h', 0),
  'with nothing recorded every count is there, at zero');
reset role;

-- a history: deliveries in and out of the window, reconcile's own events, rejections,
-- quiet and expired jobs
insert into public.webhook_events (webhook_id, route, replicate_id, status, outcome, received_at) values
  ('msg_1', 'predict', 'pr_1', 'processing', 'applied', now() - interval '5 minutes'),
  ('msg_2', 'predict', 'pr_1', 'succeeded', 'applied', now() - interval '2 minutes'),
  ('msg_3', 'unified', 'pr_1', 'succeeded', 'stale', now() - interval '1 minute'),
  ('msg_old', 'train', 'tr_1', 'succeeded', 'applied', now() - interval '2 hours'),
  ('reconcile:pr_2:failed', 'reconcile', 'pr_2', 'failed', 'reconciled', now() - interval '30 seconds'),
  ('reconcile:pr_3:failed', 'reconcile', 'pr_3', 'failed', 'reconciled', now() - interval '20 hours'),
  ('reconcile:pr_4:failed', 'reconcile', 'pr_4', 'failed', 'reconciled', now() - interval '25 hours');
insert into private.webhook_rejections (minute, route, reason, count) values
  (date_trunc('minute', now()), 'predict', 'signature', 3),
  (date_trunc('minute', now()) - interval '10 minutes', 'unified', 'signature', 2),
  (date_trunc('minute', now()) - interval '10 minutes', 'train', 'bad_request', 1),
  (date_trunc('minute', now()) - interval '2 hours', 'train', 'method', 7);
update public.predictions set updated_at = now() - interval '11 minutes' where id = :'p1';
update public.predictions set status = 'processing', updated_at = now() - interval '9 minutes' where id = :'p4';
update public.predictions set status = 'failed', error = 'outputs expired before they were stored',
  updated_at = now() - interval '1 hour' where id = :'p5';
update public.models set status = 'failed', error = 'outputs expired before they were stored',
  updated_at = now() - interval '2 days' where id = :'m2';
update public.models set status = 'succeeded', updated_at = now() - interval '3 hours' where id = :'m3';

set local role service_role;
select is(public.recent_activity() -> 'deliveries',
  '{"applied": 2, "stale": 1, "ignored": 0}'::jsonb,
  'deliveries of the last hour by outcome; older ones and reconcile''s own left out');
select is(public.recent_activity() ->> 'last_delivery_at',
  to_jsonb(now() - interval '1 minute') #>> '{}',
  'the newest delivery from Replicate, not reconcile''s event');
select is(public.recent_activity() -> 'rejected',
  '{"method": 0, "too_large": 0, "signature": 5, "bad_request": 1, "not_found": 0, "unavailable": 0}'::jsonb,
  'rejections of the last hour by reason, every route together');
select is((public.recent_activity() ->> 'stuck_jobs')::integer, 1,
  'stuck: not terminal and unchanged for ten minutes (not a job changed nine minutes ago, nor a finished one)');
select is((public.recent_activity() ->> 'reconciled_24h')::integer, 2, 'reconciled in the last 24 hours');
select is((public.recent_activity() ->> 'expired_outputs_24h')::integer, 1,
  'outputs expired in the last 24 hours (not two days ago)');
select is((public.recent_activity(86400, 60) -> 'rejected' ->> 'method')::integer, 7,
  'the window is the caller''s');

-- retention
reset role;
insert into public.webhook_events (webhook_id, route, outcome, received_at)
select 'old_' || n, 'predict', 'applied', now() - interval '31 days' - make_interval(mins => n)
from generate_series(1, 7) n;
insert into private.webhook_rejections (minute, route, reason, count)
select date_trunc('minute', now()) - interval '40 days' - make_interval(mins => n), 'predict', 'signature', 1
from generate_series(1, 4) n;
set local role service_role;
select is(public.prune_webhook_history(30, 5),
  '{"webhook_events": 5, "rejections": 4}'::jsonb, 'at most a batch of each table per call');
select is(public.prune_webhook_history(30, 5),
  '{"webhook_events": 2, "rejections": 0}'::jsonb, 'the next call takes the rest');
select is((select count(*)::integer from public.webhook_events), 7,
  'newer rows are kept');
select is(public.prune_webhook_history(1, 100) ->> 'webhook_events', '1',
  'the retention is the caller''s: with one day, the event of 25 hours ago goes');
select throws_ok($$select public.prune_webhook_history(0)$$, '22023', null,
  'a retention under a day is refused');

select * from finish();
rollback;
