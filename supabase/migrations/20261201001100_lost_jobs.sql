-- Reconcile's second work list: jobs the first list (stale_replicate_jobs) never shows, so
-- that every charged job settles.
--
-- lost_replicate_jobs(p_older_than_seconds, p_max_age_seconds, p_orphan_after_seconds,
-- p_limit): jobs not terminal whose next check is due (next_check_at null or past), and
-- either
--   * orphans: no Replicate id, created more than p_orphan_after_seconds ago (the app
--     charged, then creating the prediction or training failed). Reconcile ends them
--     'aborted' and refunds them;
--   * old: a Replicate id, created p_max_age_seconds ago or earlier, quiet for
--     p_older_than_seconds. Reconcile asks Replicate once more and, when it still does not
--     know the job (404), ends it 'aborted' and refunds it.
-- Oldest created first, at most p_limit (null: 50). Returns the columns of
-- stale_replicate_jobs (replicate_id null for an orphan).

create or replace function public.lost_replicate_jobs(
  p_older_than_seconds integer, p_max_age_seconds integer, p_orphan_after_seconds integer,
  p_limit integer
) returns table (job text, job_id uuid, user_id uuid, replicate_id text, status text)
language sql stable security invoker set search_path = ''
as $$
  select j.job, j.id, j.user_id, j.replicate_id, j.status::text
  from private.jobs j
  where not private.is_terminal(j.status)
    and (j.next_check_at is null or j.next_check_at <= now())
    and case when j.replicate_id is null
             then j.created_at < now() - make_interval(secs => greatest(coalesce(p_orphan_after_seconds, 86400), 0))
             else p_max_age_seconds is not null
                  and j.created_at <= now() - make_interval(secs => p_max_age_seconds)
                  and j.updated_at < now() - make_interval(secs => greatest(coalesce(p_older_than_seconds, 0), 0))
        end
  order by j.created_at, j.id
  limit greatest(coalesce(p_limit, 50), 0);
$$;

grant execute on function public.lost_replicate_jobs(integer, integer, integer, integer) to service_role;

-- Orphans are few; find them without reading every job (same expression as the filter, so
-- the planner can use these).
create index if not exists models_orphan_idx on public.models (created_at)
  where not private.is_terminal(status) and replicate_training_id is null;
create index if not exists predictions_orphan_idx on public.predictions (created_at)
  where not private.is_terminal(status) and replicate_prediction_id is null;
