-- The trigger functions move to private (nothing should call them over HTTP), with an
-- empty search_path. Same behaviour as before:
--   * updated_at moves to now() on every update of a job, unless the statement sets it
--     itself (touch_replicate_job and tests that age a row do);
--   * a refund ledger row names exactly one job when written or turned into a refund; the
--     one exception is the foreign key clearing the link of an existing refund row because
--     its job was deleted.

create or replace function private.touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := case when new.updated_at is distinct from old.updated_at
                         then new.updated_at  -- the statement set it
                         else now() end;
  return new;
end;
$$;

create or replace function private.check_refund_names_one_job()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_jobs integer := num_nonnulls(new.model_id, new.prediction_id);
begin
  if new.reason is distinct from 'refund' or v_jobs = 1 then
    return new;
  end if;
  if tg_op = 'UPDATE' and old.reason = 'refund' and v_jobs = 0 then
    return new;  -- the job was deleted: the money history stays
  end if;
  raise exception 'a refund ledger row must name exactly one job (model_id or prediction_id)'
    using errcode = 'check_violation';
end;
$$;

-- Re-point the triggers (same names, same events).
drop trigger if exists models_set_updated_at on public.models;
drop trigger if exists predictions_set_updated_at on public.predictions;
drop trigger if exists credit_ledger_refund_job on public.credit_ledger;
create trigger models_set_updated_at before update on public.models
  for each row execute function private.touch_updated_at();
create trigger predictions_set_updated_at before update on public.predictions
  for each row execute function private.touch_updated_at();
create trigger credit_ledger_refund_job before insert or update on public.credit_ledger
  for each row execute function private.check_refund_names_one_job();

drop function if exists public.replicate_jobs_set_updated_at();
drop function if exists public.credit_ledger_check_refund_job();
