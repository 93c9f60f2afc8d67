-- note_replicate_event: adds a note to a recorded delivery's detail, after the fact. The
-- functions use it to say which outputs were kept as received instead of stored (a host
-- not in OUTPUT_HOSTS, a value that only looks like a URL or a data: URI), by position
-- and reason, never the value. The note is informational: the job's state was already
-- applied in apply_replicate_event's own transaction.

create or replace function public.note_replicate_event(p_webhook_id text, p_note text)
returns void
language sql volatile security invoker set search_path = ''
as $$
  update public.webhook_events e
    set detail = left(concat_ws('; ', e.detail, nullif(btrim(p_note), '')), 2000)
    where e.webhook_id = p_webhook_id;
$$;

grant execute on function public.note_replicate_event(text, text) to service_role;
