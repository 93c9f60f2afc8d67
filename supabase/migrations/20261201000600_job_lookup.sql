-- One job lookup, shared by find_replicate_job and apply_replicate_event.
--
-- private.jobs shows trainings (models) and predictions as one kind of row: which table
-- (tbl: model | prediction), what the answers call it (job: model | prediction | upscale),
-- and the columns the state rules read. It runs with its caller's rights.
--
-- private.job_table reads a caller's p_job_kind: model, prediction or upscale (an upscale
-- is a prediction), any case, blanks ignored; null means "either table".
--
-- private.find_job finds the job an event is about, without locking:
--   p_job_id given -> that row, only if its user_id = p_user_id;
--   p_job_id null  -> by Replicate id (models.replicate_training_id,
--                     predictions.replicate_prediction_id);
-- in the p_job_kind table only, or models first, then predictions. No row: nothing found.
--
-- private.lock_job locks a found job's row (select ... for update) and reads it again, as
-- it is once the lock is held; no row when it was deleted meanwhile.

create or replace view private.jobs
with (security_invoker = true)
as
  select 'model'::text as tbl, 'model'::text as job,
         m.id, m.user_id, m.status, m.replicate_training_id as replicate_id,
         m.credits_cost, m.refunded_at, null::jsonb as output, m.created_at, m.updated_at
  from public.models m
  union all
  select 'prediction', case when p.kind = 'upscale' or starts_with(coalesce(p.prompt, ''), '[UPSCALED]')
                            then 'upscale' else 'prediction' end,
         p.id, p.user_id, p.status, p.replicate_prediction_id,
         p.credits_cost, p.refunded_at, p.output, p.created_at, p.updated_at
  from public.predictions p;

revoke all on private.jobs from public, anon, authenticated;
grant select on private.jobs to service_role;

create or replace function private.job_table(p_job_kind text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_kind text := lower(nullif(btrim(p_job_kind), ''));
begin
  if v_kind is null or v_kind in ('model', 'prediction') then
    return v_kind;
  elsif v_kind = 'upscale' then
    return 'prediction';
  end if;
  raise exception 'unknown job kind: %', p_job_kind using errcode = 'invalid_parameter_value';
end;
$$;

create or replace function private.find_job(
  p_replicate_id text,
  p_job_kind     text,
  p_job_id       uuid,
  p_user_id      uuid
) returns setof private.jobs
language plpgsql
stable
set search_path = ''
as $$
declare
  v_tbl text := private.job_table(p_job_kind);
begin
  if p_job_id is not null then
    return query
      select * from private.jobs j
      where j.id = p_job_id and j.user_id = p_user_id and (v_tbl is null or j.tbl = v_tbl)
      order by j.tbl limit 1;
  elsif p_replicate_id is not null then
    return query
      select * from private.jobs j
      where j.replicate_id = p_replicate_id and (v_tbl is null or j.tbl = v_tbl)
      order by j.tbl limit 1;
  end if;
end;
$$;

create or replace function private.lock_job(p_tbl text, p_id uuid)
returns setof private.jobs
language plpgsql
volatile
set search_path = ''
as $$
begin
  if p_tbl = 'model' then
    perform from public.models where id = p_id for update;
  else
    perform from public.predictions where id = p_id for update;
  end if;
  return query select * from private.jobs j where j.tbl = p_tbl and j.id = p_id;
end;
$$;
