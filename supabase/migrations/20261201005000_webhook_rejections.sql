-- Rejected requests, counted: how many deliveries the webhook routes refused, and why, so
-- that health can say "Replicate's deliveries are failing their signature" without anyone
-- reading logs.
--
-- One row per minute, route and reason, with a counter: a flood of bad requests adds at
-- most one row per route and reason a minute, never one per request. Nothing of the
-- request is kept (no body, header or address): the reason is one of the words below.
--
--   method       405: not a POST
--   too_large    413: a body over MAX_BODY_BYTES
--   signature    401: missing, invalid, stale or future signature
--   bad_request  400: missing or invalid query parameters, or a body that is not a
--                Replicate object
--   not_found    404: train/predict name no job of that user
--   unavailable  503: the database, the bucket or the configuration failed
--
-- public.record_webhook_rejection(p_route, p_reason) adds one to the current minute's row
-- (an upsert). The table is internal (schema private, out of PostgREST's reach); the
-- service role writes it through the function and reads it through recent_activity.

create table if not exists private.webhook_rejections (
  minute timestamptz not null,
  route  text not null,
  reason text not null,
  count  bigint not null default 1,
  primary key (minute, route, reason),
  constraint webhook_rejections_reason_check check (reason in
    ('method', 'too_large', 'signature', 'bad_request', 'not_found', 'unavailable')),
  constraint webhook_rejections_route_check check (route ~ '^[a-z][a-z0-9_-]{0,31}$'),
  constraint webhook_rejections_count_check check (count > 0)
);

alter table private.webhook_rejections enable row level security;
revoke all on table private.webhook_rejections from public, anon, authenticated;
grant select, insert, update, delete on table private.webhook_rejections to service_role;

create or replace function public.record_webhook_rejection(p_route text, p_reason text)
returns void
language sql volatile security invoker set search_path = ''
as $$
  insert into private.webhook_rejections as r (minute, route, reason)
  values (date_trunc('minute', now()), p_route, p_reason)
  on conflict (minute, route, reason) do update set count = r.count + 1;
$$;

grant execute on function public.record_webhook_rejection(text, text) to service_role;
