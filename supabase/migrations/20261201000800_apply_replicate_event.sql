-- apply_replicate_event: every database effect of one verified webhook (or one reconcile
-- result) in one transaction. Same parameters and answer as before; the rules now live in
-- private.find_job / private.lock_job (which job), private.decide (what happens) and
-- private.status_rank (the order).
--
--   1. Find the job (private.find_job) and lock its row (private.lock_job). Not found ->
--      'not_found' and nothing is written, not even webhook_events, so a retry after the
--      row exists applies normally.
--   2. Dedup on p_webhook_id: insert the webhook_events row (on conflict do nothing). When
--      the id is already there -> 'duplicate', nothing changes. A concurrent delivery with
--      the same id waits on the job's row lock (and on the key) and then finds it. (Because
--      the lookup comes first, a repeat delivery for a job deleted meanwhile answers
--      'not_found' rather than 'duplicate'.)
--   3. Decide (private.decide), then carry it out: the refund ledger row (the row lock,
--      refunded_at and the unique refund indexes each make it at most once), the job's row.
--      SQL null never replaces a stored value.
--   4. The webhook_events row gets the outcome and a short detail.
--
-- Returns {"outcome": applied|reconciled|duplicate|stale|not_found,
--          "job": model|prediction|upscale|null, "job_id", "user_id",
--          "status": status after the call, "previous_status": status before it,
--          "refunded": this call wrote the refund row, "credits_refunded": int}.

create or replace function public.apply_replicate_event(
  p_webhook_id text, p_route text, p_replicate_id text, p_status text,
  -- train/predict name their row; the others find it by Replicate id
  p_job_kind text default null, p_job_id uuid default null, p_user_id uuid default null,
  -- what the event carries (null: keep what is stored)
  p_output jsonb default null, p_output_urls text[] default null,
  p_weights_url text default null, p_version text default null, p_error text default null,
  p_metrics jsonb default null, p_started_at timestamptz default null,
  p_completed_at timestamptz default null,
  -- applied, or reconciled when reconcile applies it
  p_outcome text default 'applied'
) returns jsonb
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_event    public.replicate_status;
  v_applied  text := coalesce(p_outcome, 'applied');
  v_job      private.jobs;
  v_taken    boolean := false;
  v_decision record;
  v_refunded boolean := false;
begin
  if nullif(btrim(p_webhook_id), '') is null then
    raise exception 'p_webhook_id is required' using errcode = 'invalid_parameter_value';
  elsif nullif(btrim(p_route), '') is null then
    raise exception 'p_route is required' using errcode = 'invalid_parameter_value';
  end if;
  v_event := private.parse_status(p_status);
  perform private.job_table(p_job_kind);
  if v_applied not in ('applied', 'reconciled') then
    raise exception 'p_outcome must be applied or reconciled' using errcode = 'invalid_parameter_value';
  end if;

  -- 1. find and lock
  select * into v_job from private.find_job(p_replicate_id, p_job_kind, p_job_id, p_user_id);
  if found then
    select * into v_job from private.lock_job(v_job.tbl, v_job.id);
  end if;
  if v_job.id is null then
    return jsonb_build_object(
      'outcome', 'not_found', 'job', null, 'job_id', null, 'user_id', null,
      'status', null, 'previous_status', null, 'refunded', false, 'credits_refunded', 0);
  end if;

  -- 2. dedup: claim the webhook id (the outcome is filled in below)
  insert into public.webhook_events (webhook_id, route, replicate_id, status, outcome)
    values (p_webhook_id, p_route, p_replicate_id, p_status, 'ignored')
    on conflict (webhook_id) do nothing;
  if not found then
    return jsonb_build_object(
      'outcome', 'duplicate', 'job', v_job.job, 'job_id', v_job.id, 'user_id', v_job.user_id,
      'status', v_job.status, 'previous_status', v_job.status,
      'refunded', false, 'credits_refunded', 0);
  end if;

  -- 3. decide
  if v_job.replicate_id is null and p_replicate_id is not null then
    v_taken := exists (select from private.jobs j
                       where j.tbl = v_job.tbl and j.replicate_id = p_replicate_id);
  end if;
  select * into v_decision from private.decide(
    p_previous => v_job.status, p_event => v_event,
    p_stored_output => v_job.output, p_event_output => p_output,
    p_stored_replicate_id => v_job.replicate_id, p_event_replicate_id => p_replicate_id,
    p_names_job => p_job_id is not null, p_replicate_id_taken => v_taken,
    p_credits_cost => v_job.credits_cost, p_refunded => v_job.refunded_at is not null,
    p_applied => v_applied);

  -- ... and carry it out
  if v_decision.refund then
    insert into public.credit_ledger (user_id, delta, reason, model_id, prediction_id)
      values (v_job.user_id, v_job.credits_cost, 'refund',
              case v_job.tbl when 'model' then v_job.id end,
              case v_job.tbl when 'prediction' then v_job.id end)
      on conflict do nothing;
    v_refunded := found;
    v_job.refunded_at := now();  -- a refund row for this job exists either way
    if v_refunded then
      v_decision.detail := v_decision.detail || '; refunded ' || v_job.credits_cost;
    end if;
  end if;

  if v_decision.outcome = v_applied and v_job.tbl = 'model' then
    update public.models m set
      (status, refunded_at, error) = (v_decision.status, v_job.refunded_at, coalesce(p_error, m.error)),
      replicate_training_id = case when v_decision.fill_replicate_id then p_replicate_id
                                   else m.replicate_training_id end,
      version = coalesce(p_version, m.version),
      weights_url = coalesce(p_weights_url, m.weights_url),
      completed_at = case when v_decision.completes
                          then coalesce(p_completed_at, m.completed_at, now()) else m.completed_at end
    where m.id = v_job.id;
  elsif v_decision.outcome = v_applied then
    update public.predictions p set
      (status, refunded_at, error) = (v_decision.status, v_job.refunded_at, coalesce(p_error, p.error)),
      replicate_prediction_id = case when v_decision.fill_replicate_id then p_replicate_id
                                     else p.replicate_prediction_id end,
      output = case when v_decision.take_output then p_output else p.output end,
      (output_urls, metrics, started_at) = (coalesce(p_output_urls, p.output_urls),
                                            coalesce(p_metrics, p.metrics),
                                            coalesce(p_started_at, p.started_at)),
      completed_at = case when v_decision.completes
                          then coalesce(p_completed_at, p.completed_at, now()) else p.completed_at end
    where p.id = v_job.id;
  end if;

  -- 4. record the outcome
  update public.webhook_events
    set outcome = v_decision.outcome, detail = v_decision.detail
    where webhook_id = p_webhook_id;

  return jsonb_build_object(
    'outcome', v_decision.outcome, 'job', v_job.job, 'job_id', v_job.id,
    'user_id', v_job.user_id, 'status', v_decision.status, 'previous_status', v_job.status,
    'refunded', v_refunded,
    'credits_refunded', case when v_refunded then v_job.credits_cost else 0 end);
end;
$$;

grant execute on function public.apply_replicate_event(text, text, text, text, text, uuid, uuid,
  jsonb, text[], text, text, text, jsonb, timestamptz, timestamptz, text) to service_role;
