-- The read RPC on top of the shared lookup (private.jobs, private.find_job).
-- Same parameters and answers as before.
--
-- find_replicate_job: the job an event is about, read-only (used before copying output
-- files), found exactly as apply_replicate_event finds it. Returns {"job": model|
-- prediction|upscale, "job_id", "user_id", "status", "replicate_id"} or null. replicate_id
-- is the one stored on the row (null when none yet; it may differ from p_replicate_id on
-- train/predict, which apply_replicate_event then treats as stale).
--
-- stale_replicate_jobs and touch_replicate_job are rebuilt on the same lookup, with the
-- reconcile backoff, in 20261201001000_reconcile_backoff.sql.

create or replace function public.find_replicate_job(
  p_replicate_id text, p_job_kind text default null, p_job_id uuid default null, p_user_id uuid default null
) returns jsonb
language sql stable security invoker set search_path = ''
as $$
  select jsonb_build_object('job', j.job, 'job_id', j.id, 'user_id', j.user_id,
                            'status', j.status, 'replicate_id', j.replicate_id)
  from private.find_job(p_replicate_id, p_job_kind, p_job_id, p_user_id) j;
$$;

grant execute on function public.find_replicate_job(text, text, uuid, uuid) to service_role;
