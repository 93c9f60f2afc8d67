-- Realtime the way Supabase recommends it now: Broadcast from the database. Every change
-- of a job that a user can see (a new job; a new status, output or error) is sent with
-- realtime.send to the private topic user:<user_id>:jobs, and a policy on
-- realtime.messages lets only that user receive it. The tables stay in the
-- supabase_realtime publication (first migration) for apps still on Postgres Changes.
--
-- The message: event 'job_changed', payload
--   {"id", "kind": model|prediction|upscale, "status", "error"} plus "output" for predictions.
-- Updates that change none of these (copy leases, reconcile bookkeeping) send nothing.
--
-- Without Realtime (a plain PostgreSQL, the local stack's bare test databases) this still
-- applies: the trigger function looks for realtime.send each time it runs and does nothing
-- when it is missing, and the policy is created only where realtime.messages exists. (A
-- database that gets Realtime later needs the policy block below run again.)

-- Runs as its owner: realtime.send writes realtime.messages, which the service role (the
-- webhook functions, through PostgREST) need not be able to write itself.
create or replace function private.broadcast_job_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_tbl     text := case tg_table_name when 'models' then 'model' else 'prediction' end;
  v_kind    text;
  v_payload jsonb;
begin
  if to_regprocedure('realtime.send(jsonb, text, text, boolean)') is null then
    return null;  -- no Realtime in this database
  end if;
  -- what the answers call the job (an upscale is a prediction): the one rule, in private.jobs
  select j.job into v_kind from private.jobs j where j.tbl = v_tbl and j.id = new.id;
  v_payload := jsonb_build_object('id', new.id, 'kind', coalesce(v_kind, v_tbl),
                                  'status', new.status, 'error', new.error);
  if v_tbl = 'prediction' then
    v_payload := v_payload || jsonb_build_object('output', new.output);
  end if;
  perform realtime.send(v_payload, 'job_changed', 'user:' || new.user_id::text || ':jobs', true);
  return null;
end;
$$;

-- A trigger function is not an RPC: nobody calls it directly.
revoke all on function private.broadcast_job_change() from public, anon, authenticated, service_role;

drop trigger if exists models_broadcast_insert on public.models;
drop trigger if exists models_broadcast_update on public.models;
drop trigger if exists predictions_broadcast_insert on public.predictions;
drop trigger if exists predictions_broadcast_update on public.predictions;
create trigger models_broadcast_insert after insert on public.models
  for each row execute function private.broadcast_job_change();
create trigger models_broadcast_update after update on public.models
  for each row
  when (old.status is distinct from new.status or old.error is distinct from new.error
        or old.user_id is distinct from new.user_id)
  execute function private.broadcast_job_change();
create trigger predictions_broadcast_insert after insert on public.predictions
  for each row execute function private.broadcast_job_change();
create trigger predictions_broadcast_update after update on public.predictions
  for each row
  when (old.status is distinct from new.status or old.error is distinct from new.error
        or old.output is distinct from new.output or old.kind is distinct from new.kind
        or old.prompt is distinct from new.prompt or old.user_id is distinct from new.user_id)
  execute function private.broadcast_job_change();

-- Who receives: a signed-in user joining their own jobs topic (Realtime Authorization reads
-- the topic being joined with realtime.topic(); (select ...) is evaluated once per query).
-- Rerunnable: the policy is dropped and made again.
do $$
begin
  if to_regclass('realtime.messages') is null then
    raise notice 'no realtime.messages here: the job broadcasts policy is not created';
    return;
  end if;
  drop policy if exists job_broadcasts_select_own on realtime.messages;
  create policy job_broadcasts_select_own on realtime.messages
    for select to authenticated
    using (
      realtime.messages.extension = 'broadcast'
      and (select realtime.topic()) = 'user:' || (select auth.uid())::text || ':jobs'
      -- Realtime's check reads a probe row it writes on the joined topic; this also keeps
      -- a direct read of the table to the user's own messages
      and realtime.messages.topic = (select realtime.topic())
    );
end;
$$;
