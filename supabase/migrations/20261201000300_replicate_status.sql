-- The status vocabulary and its order, each written once.
--
-- public.replicate_status is Replicate's vocabulary (plus pending: created, nothing heard
-- yet). It is the type of models.status and predictions.status, replacing the two check
-- constraints that listed it. It stays a text domain, so PostgREST, Realtime and every
-- query see the same strings as before.
--
-- private.status_rank is the order: pending 0 < starting 1 < processing 2 < terminal 3.
-- Every other rule (is it over, may it move, is it stale) is stated through it.
--
-- Changing the column type checks and rewrites both tables (an exclusive lock for the
-- length of it).

create domain public.replicate_status as text
  constraint replicate_status_check
  check (value in ('pending', 'starting', 'processing', 'succeeded', 'failed', 'canceled', 'aborted'));

create or replace function private.status_rank(p_status public.replicate_status)
returns integer
language sql
immutable
strict
set search_path = ''
as $$
  select case p_status
           when 'pending' then 0
           when 'starting' then 1
           when 'processing' then 2
           else 3
         end;
$$;

create or replace function private.is_terminal(p_status public.replicate_status)
returns boolean
language sql
immutable
strict
set search_path = ''
as $$
  select private.status_rank(p_status) = 3;
$$;

-- A status from a caller: the vocabulary's value, or invalid_parameter_value.
create or replace function private.parse_status(p_status text)
returns public.replicate_status
language plpgsql
immutable
set search_path = ''
as $$
begin
  if p_status is not null then
    return p_status::public.replicate_status;
  end if;
  raise exception 'unknown status: null' using errcode = 'invalid_parameter_value';
exception
  when check_violation then
    raise exception 'unknown status: %', p_status using errcode = 'invalid_parameter_value';
end;
$$;

-- The columns take the domain; their checks and the reconcile indexes' status lists go.
drop index if exists public.models_reconcile_idx;
drop index if exists public.predictions_reconcile_idx;

alter table public.models drop constraint if exists models_status_check;
alter table public.predictions drop constraint if exists predictions_status_check;

alter table public.models alter column status type public.replicate_status;
alter table public.predictions alter column status type public.replicate_status;

-- Reconcile's scan: jobs not over yet that have a Replicate id (stale_replicate_jobs
-- filters with the same expression, so the planner can use these).
create index if not exists models_reconcile_idx on public.models (updated_at)
  where not private.is_terminal(status) and replicate_training_id is not null;
create index if not exists predictions_reconcile_idx on public.predictions (updated_at)
  where not private.is_terminal(status) and replicate_prediction_id is not null;
