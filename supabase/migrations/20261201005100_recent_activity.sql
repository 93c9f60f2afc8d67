-- What has been happening, in one call: health's "recent" block (with the cron bearer).
--
-- public.recent_activity(p_window_seconds default 3600, p_stuck_after_seconds default 600)
-- answers one JSON object:
--
--   window_seconds       the window the two counts below cover
--   last_delivery_at     when the newest delivery from Replicate was recorded (any route
--                        but reconcile; null when none ever was), whatever the window
--   deliveries           {outcome: n}: deliveries recorded in the window, by outcome
--                        (applied, stale, ignored, always present). A delivery repeated
--                        with the same webhook-id (duplicate) is not a new row, so it is
--                        not counted again; reconcile's own events are not deliveries
--                        (see reconciled_24h)
--   rejected             {reason: n}: requests the webhook routes refused in the window
--                        (webhook_rejections; the six reasons always present)
--   stuck_jobs           jobs not terminal whose row has not changed for
--                        p_stuck_after_seconds: reconcile moves a job it checked and
--                        found still running, so a job here is one it cannot finish
--                        (checks failing, reconcile not running, or an orphan waiting for
--                        its deadline)
--   reconciled_24h       jobs reconcile finished in the last 24 hours (webhook_events
--                        with outcome reconciled): each one a lost webhook
--   expired_outputs_24h  jobs that ended failed in the last 24 hours because their
--                        outputs expired before they were stored
--
-- Indexes for the windows and the counts: webhook_events by time, unfinished jobs by
-- updated_at, and the (few) expired jobs.

create index if not exists webhook_events_received_at_idx
  on public.webhook_events (received_at);
create index if not exists models_unfinished_idx on public.models (updated_at)
  where not private.is_terminal(status);
create index if not exists predictions_unfinished_idx on public.predictions (updated_at)
  where not private.is_terminal(status);
create index if not exists models_expired_idx on public.models (updated_at)
  where status = 'failed' and error = 'outputs expired before they were stored';
create index if not exists predictions_expired_idx on public.predictions (updated_at)
  where status = 'failed' and error = 'outputs expired before they were stored';

create or replace function public.recent_activity(
  p_window_seconds integer default 3600, p_stuck_after_seconds integer default 600
) returns jsonb
language sql stable security invoker set search_path = ''
as $$
  with
  settings as (
    select greatest(coalesce(p_window_seconds, 3600), 1) as window_seconds,
           now() - make_interval(secs => greatest(coalesce(p_window_seconds, 3600), 1)) as since,
           now() - make_interval(secs => greatest(coalesce(p_stuck_after_seconds, 600), 0)) as quiet_since,
           now() - interval '24 hours' as day
  ),
  deliveries as (
    select e.outcome, count(*) as n
    from public.webhook_events e, settings s
    where e.received_at >= s.since and e.route <> 'reconcile'
    group by e.outcome
  ),
  rejected as (
    select r.reason, sum(r.count) as n
    from private.webhook_rejections r, settings s
    where r.minute >= date_trunc('minute', s.since)
    group by r.reason
  )
  select jsonb_build_object(
    'window_seconds', s.window_seconds,
    'last_delivery_at',
      (select max(e.received_at) from public.webhook_events e where e.route <> 'reconcile'),
    'deliveries',
      (select jsonb_object_agg(k.outcome, coalesce(d.n, 0) order by k.outcome)
       from (select unnest(array['applied', 'stale', 'ignored']) as outcome
             union select outcome from deliveries) k
       left join deliveries d using (outcome)),
    'rejected',
      (select jsonb_object_agg(k.reason, coalesce(r.n, 0) order by k.reason)
       from (select unnest(array['method', 'too_large', 'signature', 'bad_request',
                                 'not_found', 'unavailable']) as reason) k
       left join rejected r using (reason)),
    'stuck_jobs',
      (select count(*) from private.jobs j
       where not private.is_terminal(j.status) and j.updated_at < s.quiet_since),
    'reconciled_24h',
      (select count(*) from public.webhook_events e
       where e.outcome = 'reconciled' and e.received_at >= s.day),
    'expired_outputs_24h',
      (select count(*) from public.predictions p
       where p.status = 'failed' and p.error = 'outputs expired before they were stored'
         and p.updated_at >= s.day)
      + (select count(*) from public.models m
         where m.status = 'failed' and m.error = 'outputs expired before they were stored'
           and m.updated_at >= s.day)
  )
  from settings s;
$$;

grant execute on function public.recent_activity(integer, integer) to service_role;
