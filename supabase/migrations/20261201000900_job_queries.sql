-- The read and touch RPCs on top of the shared lookup (private.jobs, private.find_job).
-- Same parameters and answers as before.
--
-- find_replicate_job: the job an event is about, read-only (used before copying output
-- files), found exactly as apply_replicate_event finds it. Returns {"job": model|
-- prediction|upscale, "job_id", "user_id", "status", "replicate_id"} or null. replicate_id
-- is the one stored on the row (null when none yet; it may differ from p_replicate_id on
-- train/predict, which apply_replicate_event then treats as stale).
--
-- stale_replicate_jobs: reconcile's work list. Jobs with a Replicate id, not terminal,
-- updated_at older than p_older_than_seconds, created_at within p_max_age_seconds (null:
-- no age limit), oldest updated_at first, at most p_limit (null: 50).
--
-- touch_replicate_job: moves a job's updated_at to now() (reconcile, when Replicate does
-- not know the job: it then waits another quiet period). p_job_kind: model | prediction |
-- upscale.

create or replace function public.find_replicate_job(
  p_replicate_id text, p_job_kind text default null, p_job_id uuid default null, p_user_id uuid default null
) returns jsonb
language sql stable security invoker set search_path = ''
as $$
  select jsonb_build_object('job', j.job, 'job_id', j.id, 'user_id', j.user_id,
                            'status', j.status, 'replicate_id', j.replicate_id)
  from private.find_job(p_replicate_id, p_job_kind, p_job_id, p_user_id) j;
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
  order by j.updated_at, j.id
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
    update public.models set updated_at = now() where id = p_job_id;
  else
    update public.predictions set updated_at = now() where id = p_job_id;
  end if;
end;
$$;

grant execute on function public.find_replicate_job(text, text, uuid, uuid) to service_role;
grant execute on function public.stale_replicate_jobs(integer, integer, integer) to service_role;
grant execute on function public.touch_replicate_job(text, uuid) to service_role;
