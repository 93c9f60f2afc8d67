-- Replicate jobs: schema and the functions the webhook routes call through PostgREST.
--
-- Applies to a fresh Supabase project and to a plain PostgreSQL 15 that has the roles
-- anon, authenticated and service_role (BYPASSRLS); the auth schema and the
-- supabase_realtime publication are used only when they exist. Safe to run again.
--
-- Who may do what:
--   * service_role (the functions): every table privilege, EXECUTE on the functions below.
--   * authenticated: SELECT on its own profile, models, predictions and ledger rows, nothing else.
--   * anon: nothing.
-- All writes of job state go through public.apply_replicate_event, one call = one transaction.

-- ---------------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------------

create table if not exists public.profiles (
  id    uuid primary key,
  email text
);

create table if not exists public.models (
  id                    uuid primary key default gen_random_uuid(),
  user_id               uuid not null,
  status                text not null default 'pending',
  replicate_training_id text unique,
  version               text,
  weights_url           text,
  credits_cost          integer not null default 0,
  refunded_at           timestamptz,
  error                 text,
  created_at            timestamptz not null default now(),
  updated_at            timestamptz not null default now(),
  completed_at          timestamptz,
  constraint models_status_check check (status in
    ('pending', 'starting', 'processing', 'succeeded', 'failed', 'canceled', 'aborted')),
  constraint models_credits_cost_check check (credits_cost >= 0)
);

create table if not exists public.predictions (
  id                      uuid primary key default gen_random_uuid(),
  user_id                 uuid not null,
  kind                    text not null default 'generation',
  prompt                  text,
  status                  text not null default 'pending',
  replicate_prediction_id text unique,
  output                  jsonb,
  output_urls             text[],
  credits_cost            integer not null default 0,
  refunded_at             timestamptz,
  error                   text,
  metrics                 jsonb,
  created_at              timestamptz not null default now(),
  updated_at              timestamptz not null default now(),
  started_at              timestamptz,
  completed_at            timestamptz,
  constraint predictions_kind_check check (kind in ('generation', 'upscale')),
  constraint predictions_status_check check (status in
    ('pending', 'starting', 'processing', 'succeeded', 'failed', 'canceled', 'aborted')),
  constraint predictions_credits_cost_check check (credits_cost >= 0)
);

-- A ledger row moves credits for one user. A refund row names exactly one job when it is
-- written (enforced by the trigger below); afterwards the job may be deleted, which clears
-- the link (on delete set null) but keeps the money history, so the table-level check can
-- only say "at most one job".
create table if not exists public.credit_ledger (
  id            bigint generated always as identity primary key,
  user_id       uuid not null,
  delta         integer not null,
  reason        text not null,
  model_id      uuid references public.models (id) on delete set null,
  prediction_id uuid references public.predictions (id) on delete set null,
  created_at    timestamptz not null default now(),
  constraint credit_ledger_one_job_check check (num_nonnulls(model_id, prediction_id) <= 1)
);

-- "At most one refund row per job, ever", whatever the calling code does.
create unique index if not exists credit_ledger_one_refund_per_model
  on public.credit_ledger (model_id) where reason = 'refund';
create unique index if not exists credit_ledger_one_refund_per_prediction
  on public.credit_ledger (prediction_id) where reason = 'refund';
create index if not exists credit_ledger_user_id_idx on public.credit_ledger (user_id);

-- The log of verified deliveries; webhook_id (the Standard Webhooks id) is the dedup key.
-- detail is a short text written by the code, never a request body.
create table if not exists public.webhook_events (
  webhook_id   text primary key,
  route        text not null,
  replicate_id text,
  status       text,
  outcome      text not null,
  detail       text,
  received_at  timestamptz not null default now(),
  constraint webhook_events_outcome_check check (outcome in
    ('applied', 'duplicate', 'stale', 'ignored', 'reconciled'))
);

create index if not exists webhook_events_replicate_id_idx
  on public.webhook_events (replicate_id, received_at);

-- Owners' reads (row level security) and reconcile's scan: a job still waiting for news
-- (pending counts too: its start webhook may have been lost as well) that has a Replicate id.
create index if not exists models_user_id_idx on public.models (user_id);
create index if not exists predictions_user_id_idx on public.predictions (user_id);
create index if not exists models_reconcile_idx on public.models (updated_at)
  where status in ('pending', 'starting', 'processing') and replicate_training_id is not null;
create index if not exists predictions_reconcile_idx on public.predictions (updated_at)
  where status in ('pending', 'starting', 'processing') and replicate_prediction_id is not null;

-- ---------------------------------------------------------------------------------------
-- Triggers
-- ---------------------------------------------------------------------------------------

-- updated_at moves to now() on every update, unless the statement sets it itself
-- (touch_replicate_job and tests that age a row do).
create or replace function public.replicate_jobs_set_updated_at()
returns trigger
language plpgsql
set search_path = public, pg_temp
as $$
begin
  if new.updated_at is not distinct from old.updated_at then
    new.updated_at := now();
  end if;
  return new;
end;
$$;

drop trigger if exists models_set_updated_at on public.models;
create trigger models_set_updated_at
  before update on public.models
  for each row execute function public.replicate_jobs_set_updated_at();

drop trigger if exists predictions_set_updated_at on public.predictions;
create trigger predictions_set_updated_at
  before update on public.predictions
  for each row execute function public.replicate_jobs_set_updated_at();

-- A refund row must name exactly one job when written or when turned into a refund.
-- The one case allowed to leave it without a job is the foreign key clearing the link
-- of an existing refund row because its job was deleted.
create or replace function public.credit_ledger_check_refund_job()
returns trigger
language plpgsql
set search_path = public, pg_temp
as $$
begin
  if new.reason = 'refund' and num_nonnulls(new.model_id, new.prediction_id) <> 1 then
    if tg_op = 'UPDATE' and old.reason = 'refund'
       and num_nonnulls(new.model_id, new.prediction_id) = 0 then
      return new;
    end if;
    raise exception 'a refund ledger row must name exactly one job (model_id or prediction_id)'
      using errcode = 'check_violation';
  end if;
  return new;
end;
$$;

drop trigger if exists credit_ledger_refund_job on public.credit_ledger;
create trigger credit_ledger_refund_job
  before insert or update on public.credit_ledger
  for each row execute function public.credit_ledger_check_refund_job();

-- ---------------------------------------------------------------------------------------
-- Row level security and privileges
-- ---------------------------------------------------------------------------------------

alter table public.profiles       enable row level security;
alter table public.models         enable row level security;
alter table public.predictions    enable row level security;
alter table public.credit_ledger  enable row level security;
alter table public.webhook_events enable row level security;

-- Supabase's default privileges give anon and authenticated everything on new tables in
-- public: take it back, then give back only reading (filtered by the policies below).
revoke all on table public.profiles, public.models, public.predictions,
  public.credit_ledger, public.webhook_events from public, anon, authenticated;
grant select on table public.profiles, public.models, public.predictions,
  public.credit_ledger to authenticated;
grant all on table public.profiles, public.models, public.predictions,
  public.credit_ledger, public.webhook_events to service_role;

do $$
declare
  seq text := pg_get_serial_sequence('public.credit_ledger', 'id');
begin
  execute format('revoke all on sequence %s from public, anon, authenticated', seq);
  execute format('grant usage, select on sequence %s to service_role', seq);
end;
$$;

-- Owner-only reads. On Supabase the user id is auth.uid(); a plain PostgreSQL has no auth
-- schema, so there the same value is read from the JWT claims PostgREST puts in
-- request.jwt.claims. No policy allows anyone but the service role to write; webhook_events
-- has no policy at all (only the service role, which bypasses row level security, sees it).
do $$
declare
  uid text;
  t record;
begin
  if to_regprocedure('auth.uid()') is not null then
    uid := '(select auth.uid())';
  else
    uid := $e$(select (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid)$e$;
  end if;

  for t in
    select * from (values
      ('profiles',      'profiles_select_own',      'id'),
      ('models',        'models_select_own',        'user_id'),
      ('predictions',   'predictions_select_own',   'user_id'),
      ('credit_ledger', 'credit_ledger_select_own', 'user_id')
    ) as v(tbl, pol, col)
  loop
    execute format('drop policy if exists %I on public.%I', t.pol, t.tbl);
    execute format('create policy %I on public.%I for select to authenticated using (%I = %s)',
                   t.pol, t.tbl, t.col, uid);
  end loop;
end;
$$;

-- ---------------------------------------------------------------------------------------
-- Realtime: the app watches its jobs and credits change.
-- ---------------------------------------------------------------------------------------

do $$
declare
  tbl text;
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    return;
  end if;
  if (select puballtables from pg_publication where pubname = 'supabase_realtime') then
    return;  -- already publishes every table
  end if;
  foreach tbl in array array['models', 'predictions', 'credit_ledger'] loop
    if not exists (
      select 1 from pg_publication_tables
      where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = tbl
    ) then
      execute format('alter publication supabase_realtime add table public.%I', tbl);
    end if;
  end loop;
end;
$$;

-- ---------------------------------------------------------------------------------------
-- apply_replicate_event: every database effect of one verified webhook (or one reconcile
-- result) in one transaction.
--
-- Steps:
--   1. Find the job and lock its row (select ... for update):
--        p_job_id given  -> that row, only if its user_id = p_user_id (p_job_kind picks the
--                           table; null tries models, then predictions);
--        p_job_id null   -> by Replicate id: models.replicate_training_id, then
--                           predictions.replicate_prediction_id (or only the p_job_kind table).
--      Not found -> 'not_found' and nothing is written, not even webhook_events, so a retry
--      after the row exists applies normally.
--   2. Dedup on p_webhook_id: insert the webhook_events row (on conflict do nothing). When the
--      id is already there -> 'duplicate', nothing changes. A concurrent delivery with the same
--      id waits on the job's row lock (and on the key) and then finds it.
--      (Because the lookup comes first, a repeat delivery for a job deleted meanwhile answers
--      'not_found' rather than 'duplicate'.)
--   3. Decide, by status rank pending 0 < starting 1 < processing 2 < terminal 3:
--      * train/predict naming a row whose Replicate id is set and differs from the event's:
--        'stale' ('replicate id mismatch'), nothing changes. The event belongs to another run.
--      * current status terminal: nothing changes; 'duplicate' when the event repeats that
--        status, else 'stale'.
--      * lower rank: 'stale', nothing changes.
--      * same rank (e.g. processing -> processing, an output or logs event): 'stale' when the
--        event carries less output than stored; otherwise applied (output, metrics,
--        started_at, error when given), which also moves updated_at: the job is alive.
--      * higher rank: applied: status, output, output_urls, error, metrics, started_at,
--        completed_at (terminal: p_completed_at or now()), models' version and weights_url.
--      A missing Replicate id on the named row is filled in by an applied event (unless
--      another row already holds that id: then 'stale', 'replicate id belongs to another job').
--   4. Output never shrinks: SQL or JSON null never replaces a stored value; an array never
--      replaces a longer array. On same-rank events a string never replaces a longer string
--      and an object never replaces one with more keys. An event that raises the status
--      carries the later, authoritative output (with file URLs already rewritten to stored
--      ones, which may be shorter), so for strings and objects it replaces what is stored.
--   5. Moving into failed/canceled/aborted with credits_cost > 0 and refunded_at null writes
--      one ledger row (+credits_cost, 'refund') and sets refunded_at. The row lock, the
--      refunded_at test and the unique refund indexes each make it at most once.
--   6. The webhook_events row gets its outcome and a short detail.
--
-- Returns {"outcome": applied|reconciled|duplicate|stale|not_found,
--          "job": model|prediction|upscale|null, "job_id", "user_id",
--          "status": status after the call, "previous_status": status before it,
--          "refunded": this call wrote the refund row, "credits_refunded": int}.
-- ---------------------------------------------------------------------------------------

create or replace function public.apply_replicate_event(
  p_webhook_id   text,
  p_route        text,
  p_replicate_id text,
  p_status       text,
  p_job_kind     text default null,
  p_job_id       uuid default null,
  p_user_id      uuid default null,
  p_output       jsonb default null,
  p_output_urls  text[] default null,
  p_weights_url  text default null,
  p_version      text default null,
  p_error        text default null,
  p_metrics      jsonb default null,
  p_started_at   timestamptz default null,
  p_completed_at timestamptz default null,
  p_outcome      text default 'applied'
) returns jsonb
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
as $$
declare
  v_statuses constant text[] :=
    array['pending', 'starting', 'processing', 'succeeded', 'failed', 'canceled', 'aborted'];
  v_kind          text := lower(nullif(btrim(p_job_kind), ''));
  v_applied       text := coalesce(p_outcome, 'applied');
  v_table         text;          -- 'model' | 'prediction': where the job was found
  v_job           text;          -- 'model' | 'prediction' | 'upscale'
  v_model         public.models;
  v_pred          public.predictions;
  v_id            uuid;
  v_user          uuid;
  v_prev          text;
  v_stored_rid    text;
  v_cost          integer;
  v_refunded_at   timestamptz;
  v_old_output    jsonb;
  v_new_output    jsonb;
  v_prev_rank     integer;
  v_new_rank      integer;
  v_terminal      boolean;
  v_shrinks       boolean := false;
  v_take_output   boolean := false;
  v_fill_rid      boolean := false;
  v_outcome       text;
  v_detail        text;
  v_status_after  text;
  v_refunded      boolean := false;
  v_credits       integer := 0;
  v_rows          integer;
begin
  if p_webhook_id is null or btrim(p_webhook_id) = '' then
    raise exception 'p_webhook_id is required' using errcode = 'invalid_parameter_value';
  end if;
  if p_route is null or btrim(p_route) = '' then
    raise exception 'p_route is required' using errcode = 'invalid_parameter_value';
  end if;
  if p_status is null or not (p_status = any (v_statuses)) then
    raise exception 'unknown status: %', coalesce(p_status, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if v_kind = 'upscale' then
    v_kind := 'prediction';
  end if;
  if v_kind is not null and v_kind not in ('model', 'prediction') then
    raise exception 'unknown job kind: %', p_job_kind using errcode = 'invalid_parameter_value';
  end if;
  if v_applied not in ('applied', 'reconciled') then
    raise exception 'p_outcome must be applied or reconciled' using errcode = 'invalid_parameter_value';
  end if;

  -- 1. find and lock
  if p_job_id is not null then
    if v_kind is null or v_kind = 'model' then
      select * into v_model from public.models
        where id = p_job_id and user_id = p_user_id for update;
      if found then v_table := 'model'; end if;
    end if;
    if v_table is null and (v_kind is null or v_kind = 'prediction') then
      select * into v_pred from public.predictions
        where id = p_job_id and user_id = p_user_id for update;
      if found then v_table := 'prediction'; end if;
    end if;
  elsif p_replicate_id is not null then
    if v_kind is null or v_kind = 'model' then
      select * into v_model from public.models
        where replicate_training_id = p_replicate_id for update;
      if found then v_table := 'model'; end if;
    end if;
    if v_table is null and (v_kind is null or v_kind = 'prediction') then
      select * into v_pred from public.predictions
        where replicate_prediction_id = p_replicate_id for update;
      if found then v_table := 'prediction'; end if;
    end if;
  end if;

  if v_table is null then
    return jsonb_build_object(
      'outcome', 'not_found', 'job', null, 'job_id', null, 'user_id', null,
      'status', null, 'previous_status', null, 'refunded', false, 'credits_refunded', 0);
  end if;

  if v_table = 'model' then
    v_job := 'model';
    v_id := v_model.id;  v_user := v_model.user_id;  v_prev := v_model.status;
    v_stored_rid := v_model.replicate_training_id;
    v_cost := v_model.credits_cost;  v_refunded_at := v_model.refunded_at;
  else
    v_job := case when v_pred.kind = 'upscale' or starts_with(coalesce(v_pred.prompt, ''), '[UPSCALED]')
                  then 'upscale' else 'prediction' end;
    v_id := v_pred.id;  v_user := v_pred.user_id;  v_prev := v_pred.status;
    v_stored_rid := v_pred.replicate_prediction_id;
    v_cost := v_pred.credits_cost;  v_refunded_at := v_pred.refunded_at;
    v_old_output := v_pred.output;
  end if;
  v_status_after := v_prev;

  -- 2. dedup: claim the webhook id (the outcome is filled in below)
  insert into public.webhook_events (webhook_id, route, replicate_id, status, outcome)
    values (p_webhook_id, p_route, p_replicate_id, p_status, 'ignored')
    on conflict (webhook_id) do nothing;
  get diagnostics v_rows = row_count;
  if v_rows = 0 then
    return jsonb_build_object(
      'outcome', 'duplicate', 'job', v_job, 'job_id', v_id, 'user_id', v_user,
      'status', v_prev, 'previous_status', v_prev, 'refunded', false, 'credits_refunded', 0);
  end if;

  -- 3. decide
  v_prev_rank := case v_prev when 'pending' then 0 when 'starting' then 1
                             when 'processing' then 2 else 3 end;
  v_new_rank  := case p_status when 'pending' then 0 when 'starting' then 1
                               when 'processing' then 2 else 3 end;
  v_terminal  := v_new_rank = 3;

  -- 4. output comparison (predictions; models keep no output)
  v_new_output := case when p_output is null or jsonb_typeof(p_output) = 'null' then null
                       else p_output end;
  if v_old_output is not null and jsonb_typeof(v_old_output) = 'null' then
    v_old_output := null;
  end if;
  if v_table = 'prediction' then
    if v_new_output is null then
      v_shrinks := v_old_output is not null;
    elsif v_old_output is null then
      v_shrinks := false;
    elsif jsonb_typeof(v_new_output) = 'array' and jsonb_typeof(v_old_output) = 'array' then
      v_shrinks := jsonb_array_length(v_new_output) < jsonb_array_length(v_old_output);
    elsif v_new_rank = v_prev_rank
          and jsonb_typeof(v_new_output) = 'string' and jsonb_typeof(v_old_output) = 'string' then
      v_shrinks := char_length(v_new_output #>> '{}') < char_length(v_old_output #>> '{}');
    elsif v_new_rank = v_prev_rank
          and jsonb_typeof(v_new_output) = 'object' and jsonb_typeof(v_old_output) = 'object' then
      v_shrinks := (select count(*) from jsonb_object_keys(v_new_output))
                 < (select count(*) from jsonb_object_keys(v_old_output));
    end if;
    v_take_output := v_new_output is not null and not v_shrinks;
  end if;

  if p_job_id is not null and v_stored_rid is not null and p_replicate_id is not null
     and v_stored_rid <> p_replicate_id then
    v_outcome := 'stale';
    v_detail := 'stale: replicate id mismatch';
  elsif v_prev_rank = 3 then
    if p_status = v_prev then
      v_outcome := 'duplicate';
      v_detail := 'duplicate: already ' || v_prev;
    else
      v_outcome := 'stale';
      v_detail := 'stale: ' || p_status || ' after ' || v_prev;
    end if;
  elsif v_new_rank < v_prev_rank then
    v_outcome := 'stale';
    v_detail := 'stale: ' || p_status || ' after ' || v_prev;
  elsif v_new_rank = v_prev_rank and v_shrinks then
    v_outcome := 'stale';
    v_detail := 'stale: less output than stored';
  else
    v_outcome := v_applied;
    v_detail := v_prev || ' -> ' || p_status;
    v_fill_rid := v_stored_rid is null and p_replicate_id is not null;
    if v_fill_rid then
      if v_table = 'model' then
        perform 1 from public.models
          where replicate_training_id = p_replicate_id and id <> v_id;
      else
        perform 1 from public.predictions
          where replicate_prediction_id = p_replicate_id and id <> v_id;
      end if;
      if found then
        v_outcome := 'stale';
        v_detail := 'stale: replicate id belongs to another job';
        v_fill_rid := false;
      end if;
    end if;
  end if;

  if v_outcome = v_applied then
    -- 5. refund, at most once per job
    if v_new_rank > v_prev_rank and p_status in ('failed', 'canceled', 'aborted')
       and v_cost > 0 and v_refunded_at is null then
      insert into public.credit_ledger (user_id, delta, reason, model_id, prediction_id)
        values (v_user, v_cost, 'refund',
                case when v_table = 'model' then v_id end,
                case when v_table = 'prediction' then v_id end)
        on conflict do nothing;
      get diagnostics v_rows = row_count;
      v_refunded := v_rows > 0;
      v_credits := case when v_refunded then v_cost else 0 end;
      v_refunded_at := now();  -- a refund row for this job exists either way
      v_detail := v_detail || case when v_refunded then '; refunded ' || v_cost else '' end;
    end if;

    if v_table = 'model' then
      update public.models set
        status                = case when v_new_rank > v_prev_rank then p_status else status end,
        replicate_training_id = case when v_fill_rid then p_replicate_id else replicate_training_id end,
        version               = coalesce(p_version, version),
        weights_url           = coalesce(p_weights_url, weights_url),
        error                 = coalesce(p_error, error),
        refunded_at           = v_refunded_at,
        completed_at          = case when v_terminal then coalesce(p_completed_at, completed_at, now())
                                     else completed_at end
      where id = v_id
      returning status into v_status_after;
    else
      update public.predictions set
        status                  = case when v_new_rank > v_prev_rank then p_status else status end,
        replicate_prediction_id = case when v_fill_rid then p_replicate_id else replicate_prediction_id end,
        output                  = case when v_take_output then v_new_output else output end,
        output_urls             = coalesce(p_output_urls, output_urls),
        error                   = coalesce(p_error, error),
        metrics                 = coalesce(p_metrics, metrics),
        started_at              = coalesce(p_started_at, started_at),
        refunded_at             = v_refunded_at,
        completed_at            = case when v_terminal then coalesce(p_completed_at, completed_at, now())
                                       else completed_at end
      where id = v_id
      returning status into v_status_after;
    end if;
  end if;

  -- 6. record the outcome
  update public.webhook_events
    set outcome = v_outcome, detail = v_detail
    where webhook_id = p_webhook_id;

  return jsonb_build_object(
    'outcome', v_outcome, 'job', v_job, 'job_id', v_id, 'user_id', v_user,
    'status', v_status_after, 'previous_status', v_prev,
    'refunded', v_refunded, 'credits_refunded', v_credits);
end;
$$;

-- ---------------------------------------------------------------------------------------
-- find_replicate_job: the job an event is about, read-only (used before copying output
-- files). Same lookup rules as apply_replicate_event, without locking. Returns
-- {"job": model|prediction|upscale, "job_id", "user_id", "status", "replicate_id"} or null.
-- replicate_id is the one stored on the row (null when none yet; it may differ from
-- p_replicate_id on train/predict, which apply_replicate_event then treats as stale).
-- ---------------------------------------------------------------------------------------

create or replace function public.find_replicate_job(
  p_replicate_id text,
  p_job_kind     text default null,
  p_job_id       uuid default null,
  p_user_id      uuid default null
) returns jsonb
language plpgsql
stable
security invoker
set search_path = public, pg_temp
as $$
declare
  v_kind   text := lower(nullif(btrim(p_job_kind), ''));
  v_model  public.models;
  v_pred   public.predictions;
begin
  if v_kind = 'upscale' then
    v_kind := 'prediction';
  end if;
  if v_kind is not null and v_kind not in ('model', 'prediction') then
    raise exception 'unknown job kind: %', p_job_kind using errcode = 'invalid_parameter_value';
  end if;

  if v_kind is null or v_kind = 'model' then
    if p_job_id is not null then
      select * into v_model from public.models where id = p_job_id and user_id = p_user_id;
    elsif p_replicate_id is not null then
      select * into v_model from public.models where replicate_training_id = p_replicate_id;
    end if;
    if v_model.id is not null then
      return jsonb_build_object(
        'job', 'model', 'job_id', v_model.id, 'user_id', v_model.user_id,
        'status', v_model.status, 'replicate_id', v_model.replicate_training_id);
    end if;
  end if;

  if v_kind is null or v_kind = 'prediction' then
    if p_job_id is not null then
      select * into v_pred from public.predictions where id = p_job_id and user_id = p_user_id;
    elsif p_replicate_id is not null then
      select * into v_pred from public.predictions where replicate_prediction_id = p_replicate_id;
    end if;
    if v_pred.id is not null then
      return jsonb_build_object(
        'job', case when v_pred.kind = 'upscale' or starts_with(coalesce(v_pred.prompt, ''), '[UPSCALED]')
                    then 'upscale' else 'prediction' end,
        'job_id', v_pred.id, 'user_id', v_pred.user_id,
        'status', v_pred.status, 'replicate_id', v_pred.replicate_prediction_id);
    end if;
  end if;

  return null;
end;
$$;

-- ---------------------------------------------------------------------------------------
-- stale_replicate_jobs: reconcile's work list. Jobs with a Replicate id, not terminal
-- (pending, starting, processing), updated_at older than p_older_than_seconds, created_at
-- within p_max_age_seconds (null: no age limit), oldest updated_at first, at most p_limit
-- (null: 50). job is 'model' (a training), 'prediction' or 'upscale' (both predictions).
-- ---------------------------------------------------------------------------------------

create or replace function public.stale_replicate_jobs(
  p_older_than_seconds integer,
  p_max_age_seconds    integer,
  p_limit              integer
) returns table (job text, job_id uuid, user_id uuid, replicate_id text, status text)
language sql
stable
security invoker
set search_path = public, pg_temp
as $$
  select j.job, j.job_id, j.user_id, j.replicate_id, j.status
  from (
    select 'model'::text as job, m.id as job_id, m.user_id, m.replicate_training_id as replicate_id,
           m.status, m.updated_at
    from public.models m
    where m.status in ('pending', 'starting', 'processing')
      and m.replicate_training_id is not null
      and m.updated_at < now() - make_interval(secs => greatest(coalesce(p_older_than_seconds, 0), 0))
      and (p_max_age_seconds is null
           or m.created_at > now() - make_interval(secs => p_max_age_seconds))
    union all
    select case when p.kind = 'upscale' or starts_with(coalesce(p.prompt, ''), '[UPSCALED]')
                then 'upscale' else 'prediction' end,
           p.id, p.user_id, p.replicate_prediction_id, p.status, p.updated_at
    from public.predictions p
    where p.status in ('pending', 'starting', 'processing')
      and p.replicate_prediction_id is not null
      and p.updated_at < now() - make_interval(secs => greatest(coalesce(p_older_than_seconds, 0), 0))
      and (p_max_age_seconds is null
           or p.created_at > now() - make_interval(secs => p_max_age_seconds))
  ) j
  order by j.updated_at, j.job_id
  limit greatest(coalesce(p_limit, 50), 0);
$$;

-- ---------------------------------------------------------------------------------------
-- touch_replicate_job: moves a job's updated_at to now() (reconcile, when Replicate does not
-- know the job: it then waits another quiet period). p_job_kind: model | prediction | upscale.
-- ---------------------------------------------------------------------------------------

create or replace function public.touch_replicate_job(
  p_job_kind text,
  p_job_id   uuid
) returns void
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
as $$
declare
  v_kind text := lower(nullif(btrim(p_job_kind), ''));
begin
  if v_kind = 'model' then
    update public.models set updated_at = now() where id = p_job_id;
  elsif v_kind in ('prediction', 'upscale') then
    update public.predictions set updated_at = now() where id = p_job_id;
  else
    raise exception 'unknown job kind: %', coalesce(p_job_kind, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
end;
$$;

-- ---------------------------------------------------------------------------------------
-- Function privileges: PostgreSQL grants EXECUTE to PUBLIC and Supabase's default
-- privileges grant it to anon and authenticated; only the service role may call these.
-- ---------------------------------------------------------------------------------------

revoke all on function public.apply_replicate_event(text, text, text, text, text, uuid, uuid,
  jsonb, text[], text, text, text, jsonb, timestamptz, timestamptz, text)
  from public, anon, authenticated;
revoke all on function public.find_replicate_job(text, text, uuid, uuid)
  from public, anon, authenticated;
revoke all on function public.stale_replicate_jobs(integer, integer, integer)
  from public, anon, authenticated;
revoke all on function public.touch_replicate_job(text, uuid)
  from public, anon, authenticated;
revoke all on function public.replicate_jobs_set_updated_at() from public, anon, authenticated;
revoke all on function public.credit_ledger_check_refund_job() from public, anon, authenticated;

grant execute on function public.apply_replicate_event(text, text, text, text, text, uuid, uuid,
  jsonb, text[], text, text, text, jsonb, timestamptz, timestamptz, text) to service_role;
grant execute on function public.find_replicate_job(text, text, uuid, uuid) to service_role;
grant execute on function public.stale_replicate_jobs(integer, integer, integer) to service_role;
grant execute on function public.touch_replicate_job(text, uuid) to service_role;
