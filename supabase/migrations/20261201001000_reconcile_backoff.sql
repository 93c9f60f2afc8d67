-- Reconcile backs off a job whose check failed, so one bad job cannot head every batch.
--
-- A check fails when Replicate's API answers 5xx or not at all, when a file keeps failing to
-- copy, or when the store is down. Before this, such a job kept its updated_at and so came
-- first in every run until it aged out: 50 of them filled every batch. Now:
--
--   * each job has reconcile_attempts (failed checks in a row) and next_check_at (no check
--     before then);
--   * public.reconcile_check_failed(p_job_kind, p_job_id) counts one more failure and sets
--     next_check_at = now() + 60 s * 2^(attempts - 1), at most one hour (60, 120, 240 ...
--     3600 s). Replicate deletes files after about an hour, so the delay stays below that.
--     Answers {"attempts": n, "next_check_at": t}; null when no such job;
--   * stale_replicate_jobs skips a job whose next_check_at is in the future, and lists the
--     others by when they became due (next_check_at, else updated_at), so a job that has
--     just come out of its delay goes after the lost webhooks that waited longer;
--   * touch_replicate_job (a check that worked: Replicate answered, nothing to change yet)
--     clears the backoff;
--   * changing only these two columns does not move updated_at: it still says when the
--     job's state last changed.

alter table public.models
  add column if not exists reconcile_attempts integer not null default 0,
  add column if not exists next_check_at timestamptz;
alter table public.predictions
  add column if not exists reconcile_attempts integer not null default 0,
  add column if not exists next_check_at timestamptz;

-- The same view with the two columns appended (create or replace may only add at the end).
create or replace view private.jobs
with (security_invoker = true)
as
  select 'model'::text as tbl, 'model'::text as job,
         m.id, m.user_id, m.status, m.replicate_training_id as replicate_id,
         m.credits_cost, m.refunded_at, null::jsonb as output, m.created_at, m.updated_at,
         m.reconcile_attempts, m.next_check_at
  from public.models m
  union all
  select 'prediction', case when p.kind = 'upscale' or starts_with(coalesce(p.prompt, ''), '[UPSCALED]')
                            then 'upscale' else 'prediction' end,
         p.id, p.user_id, p.status, p.replicate_prediction_id,
         p.credits_cost, p.refunded_at, p.output, p.created_at, p.updated_at,
         p.reconcile_attempts, p.next_check_at
  from public.predictions p;

create or replace function private.touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.updated_at is distinct from old.updated_at then
    return new;  -- the statement set it
  end if;
  -- Reconcile's bookkeeping alone is not a change of the job.
  if (to_jsonb(new) - 'reconcile_attempts' - 'next_check_at')
     = (to_jsonb(old) - 'reconcile_attempts' - 'next_check_at') then
    return new;
  end if;
  new.updated_at := now();
  return new;
end;
$$;

create or replace function private.backoff_seconds(p_attempts integer)
returns integer
language sql
immutable
set search_path = ''
as $$
  select least(60 * power(2, least(greatest(coalesce(p_attempts, 1), 1) - 1, 16))::bigint, 3600)::integer;
$$;

create or replace function public.reconcile_check_failed(p_job_kind text, p_job_id uuid)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  v_tbl      text := private.job_table(p_job_kind);
  v_attempts integer;
  v_next     timestamptz;
begin
  if v_tbl is null then
    raise exception 'unknown job kind: %', coalesce(p_job_kind, 'null')
      using errcode = 'invalid_parameter_value';
  elsif v_tbl = 'model' then
    update public.models
      set reconcile_attempts = reconcile_attempts + 1,
          next_check_at = now() + make_interval(secs => private.backoff_seconds(reconcile_attempts + 1))
      where id = p_job_id
      returning reconcile_attempts, next_check_at into v_attempts, v_next;
  else
    update public.predictions
      set reconcile_attempts = reconcile_attempts + 1,
          next_check_at = now() + make_interval(secs => private.backoff_seconds(reconcile_attempts + 1))
      where id = p_job_id
      returning reconcile_attempts, next_check_at into v_attempts, v_next;
  end if;
  if v_attempts is null then
    return null;
  end if;
  return jsonb_build_object('attempts', v_attempts, 'next_check_at', v_next);
end;
$$;

create or replace function public.stale_replicate_jobs(
  p_older_than_seconds integer, p_max_age_seconds integer, p_limit integer
) returns table (job text, job_id uuid, user_id uuid, replicate_id text, status text)
language sql stable security invoker set search_path = ''
as $$
  select j.job, j.id, j.user_id, j.replicate_id, j.status::text
  from private.jobs j
  where not private.is_terminal(j.status)
    and j.replicate_id is not null
    and j.updated_at < now() - make_interval(secs => greatest(coalesce(p_older_than_seconds, 0), 0))
    and (p_max_age_seconds is null or j.created_at > now() - make_interval(secs => p_max_age_seconds))
    and (j.next_check_at is null or j.next_check_at <= now())
  order by coalesce(j.next_check_at, j.updated_at), j.id
  limit greatest(coalesce(p_limit, 50), 0);
$$;

create or replace function public.touch_replicate_job(p_job_kind text, p_job_id uuid)
returns void
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_tbl text := private.job_table(p_job_kind);
begin
  if v_tbl is null then
    raise exception 'unknown job kind: %', coalesce(p_job_kind, 'null')
      using errcode = 'invalid_parameter_value';
  elsif v_tbl = 'model' then
    update public.models set updated_at = now(), reconcile_attempts = 0, next_check_at = null
      where id = p_job_id;
  else
    update public.predictions set updated_at = now(), reconcile_attempts = 0, next_check_at = null
      where id = p_job_id;
  end if;
end;
$$;

grant execute on function public.reconcile_check_failed(text, uuid) to service_role;
grant execute on function public.stale_replicate_jobs(integer, integer, integer) to service_role;
grant execute on function public.touch_replicate_job(text, uuid) to service_role;
