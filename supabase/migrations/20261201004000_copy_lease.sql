-- One copy of a job's output files at a time. Replicate retries a terminal webhook while
-- the first delivery may still be copying (a large training's weights can take longer
-- than Replicate waits), and reconcile may look at the same job: each would download and
-- upload the same files again. The copy lease on the job's row says who copies and until
-- when; it expires, so a function killed mid-copy does not hold the job back.

alter table public.models
  add column if not exists copy_lease_holder text,
  add column if not exists copy_lease_until  timestamptz;
alter table public.predictions
  add column if not exists copy_lease_holder text,
  add column if not exists copy_lease_until  timestamptz;

-- claim_copy: takes the lease for p_seconds when nobody holds it (or it expired, or the
-- holder asks again). False when another holder's lease runs, or the job is already
-- terminal (nothing left to copy).
create or replace function public.claim_copy(
  p_job_kind text, p_job_id uuid, p_holder text, p_seconds integer
) returns boolean
language plpgsql volatile security invoker set search_path = ''
as $$
declare
  v_tbl   text := private.job_table(p_job_kind);
  v_until timestamptz := now() + make_interval(secs => greatest(coalesce(p_seconds, 0), 1));
begin
  if nullif(btrim(p_holder), '') is null or v_tbl is null then
    raise exception 'p_holder and p_job_kind are required' using errcode = 'invalid_parameter_value';
  end if;
  if v_tbl = 'model' then
    update public.models m set copy_lease_holder = p_holder, copy_lease_until = v_until
      where m.id = p_job_id and not private.is_terminal(m.status)
        and (m.copy_lease_until is null or m.copy_lease_until < now()
             or m.copy_lease_holder = p_holder);
  else
    update public.predictions p set copy_lease_holder = p_holder, copy_lease_until = v_until
      where p.id = p_job_id and not private.is_terminal(p.status)
        and (p.copy_lease_until is null or p.copy_lease_until < now()
             or p.copy_lease_holder = p_holder);
  end if;
  return found;
end;
$$;

-- release_copy: gives the lease back (after a failed copy, so a retry need not wait for
-- it to expire). Only the holder's own lease is released.
create or replace function public.release_copy(p_job_kind text, p_job_id uuid, p_holder text)
returns void
language plpgsql volatile security invoker set search_path = ''
as $$
begin
  if private.job_table(p_job_kind) = 'model' then
    update public.models m set copy_lease_holder = null, copy_lease_until = null
      where m.id = p_job_id and m.copy_lease_holder = p_holder;
  else
    update public.predictions p set copy_lease_holder = null, copy_lease_until = null
      where p.id = p_job_id and p.copy_lease_holder = p_holder;
  end if;
end;
$$;

grant execute on function public.claim_copy(text, uuid, text, integer) to service_role;
grant execute on function public.release_copy(text, uuid, text) to service_role;
