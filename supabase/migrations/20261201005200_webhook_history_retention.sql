-- Retention: webhook_events and the rejection counts would grow forever. Reconcile calls
-- public.prune_webhook_history(p_retention_days, p_batch default 5000) once per run: it
-- deletes rows older than p_retention_days (at least 1), the oldest first, at most p_batch
-- of each table (0..50000), and answers {"webhook_events": n, "rejections": m}. A backlog
-- goes down by a batch a run instead of in one long delete.
--
-- A webhook_events row is the dedup key of its delivery; Replicate retries a delivery for
-- about a minute, so forgetting ids after days re-opens nothing (and a re-applied event is
-- still stopped by the status order).

create or replace function public.prune_webhook_history(
  p_retention_days integer, p_batch integer default 5000
) returns jsonb
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_before     timestamptz;
  v_batch      integer := least(greatest(coalesce(p_batch, 5000), 0), 50000);
  v_events     integer;
  v_rejections integer;
begin
  if p_retention_days is null or p_retention_days < 1 then
    raise exception 'prune_webhook_history: p_retention_days must be at least 1'
      using errcode = 'invalid_parameter_value';
  end if;
  v_before := now() - make_interval(days => p_retention_days);

  delete from public.webhook_events e
  where e.webhook_id in (select o.webhook_id from public.webhook_events o
                         where o.received_at < v_before
                         order by o.received_at
                         limit v_batch);
  get diagnostics v_events = row_count;

  delete from private.webhook_rejections r
  where (r.minute, r.route, r.reason) in (select o.minute, o.route, o.reason
                                          from private.webhook_rejections o
                                          where o.minute < v_before
                                          order by o.minute
                                          limit v_batch);
  get diagnostics v_rejections = row_count;

  return jsonb_build_object('webhook_events', v_events, 'rejections', v_rejections);
end;
$$;

grant execute on function public.prune_webhook_history(integer, integer) to service_role;
