-- Reconcile every minute from the database: Supabase Cron (pg_cron) calls the reconcile URL
-- with pg_net, the bearer secret kept in Supabase Vault. Vercel Hobby runs its crons once a
-- day and Replicate deletes files after about an hour, so a platform schedule alone may come
-- too late.
--
--   select public.schedule_reconcile('https://<app>/api/cron/reconcile', '<CRON_SECRET>');
--   select public.unschedule_reconcile();
--
-- schedule_reconcile(p_url, p_cron_secret, p_schedule default '* * * * *') keeps the URL and
-- the secret in Vault (secrets 'reconcile_url' and 'reconcile_cron_secret', created or
-- updated) and schedules the cron job 'replicate-webhooks-reconcile' (replaced when it
-- exists), which runs private.call_reconcile(): it reads both back from
-- vault.decrypted_secrets and sends POST <url> with 'Authorization: Bearer <secret>' through
-- net.http_post. Calling it again changes the URL, secret or schedule; there is still one
-- job. Answers the cron job's id. unschedule_reconcile() removes the job and both secrets and
-- answers whether there was a job.
--
-- pg_cron, pg_net and Vault are optional: these migrations apply without them (plpgsql
-- resolves names when a statement runs), and a call then fails with an error naming what is
-- missing and where to enable it.
--
-- The two public functions run as their owner (the migration role, which may use cron and
-- Vault), with an empty search_path; only the service role (and the owner) may call them.
-- The secret never appears in the cron job's command, in an answer or in an error.

create or replace function private.has_function(p_schema text, p_name text)
returns boolean
language sql
stable
set search_path = ''
as $$
  select exists (select from pg_catalog.pg_proc p
                 where p.pronamespace = to_regnamespace(p_schema) and p.proname = p_name);
$$;

create or replace function private.require_schedule_extensions()
returns void
language plpgsql
stable
set search_path = ''
as $$
declare
  v_missing text[] := array[]::text[];
begin
  -- By name only: the argument types differ between versions of each extension.
  if to_regclass('cron.job') is null or not private.has_function('cron', 'schedule') then
    v_missing := v_missing || 'pg_cron (Supabase Cron)'::text;
  end if;
  if not private.has_function('net', 'http_post') then
    v_missing := v_missing || 'pg_net'::text;
  end if;
  if to_regclass('vault.decrypted_secrets') is null
     or not private.has_function('vault', 'create_secret') then
    v_missing := v_missing || 'Vault (supabase_vault)'::text;
  end if;
  if cardinality(v_missing) > 0 then
    raise exception 'reconcile schedule: % not installed', array_to_string(v_missing, ', ')
      using errcode = 'feature_not_supported',
            hint = 'In the Supabase dashboard, enable them under Database > Extensions '
                   '(pg_cron, pg_net, supabase_vault), or with create extension, then call this again.';
  end if;
end;
$$;

-- Creates or updates one Vault secret by name.
create or replace function private.put_vault_secret(p_name text, p_value text, p_description text)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_id uuid;
begin
  select s.id into v_id from vault.decrypted_secrets s where s.name = p_name limit 1;
  if v_id is null then
    perform vault.create_secret(p_value, p_name, p_description);
  else
    perform vault.update_secret(v_id, p_value, p_name, p_description);
  end if;
end;
$$;

-- What the cron job runs, as the role that scheduled it.
create or replace function private.call_reconcile()
returns bigint
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_url    text;
  v_secret text;
begin
  perform private.require_schedule_extensions();
  select s.decrypted_secret into v_url
    from vault.decrypted_secrets s where s.name = 'reconcile_url' limit 1;
  select s.decrypted_secret into v_secret
    from vault.decrypted_secrets s where s.name = 'reconcile_cron_secret' limit 1;
  if v_url is null or v_secret is null then
    raise exception 'reconcile schedule: the URL or secret is missing from Vault'
      using errcode = 'no_data_found',
            hint = 'Call public.schedule_reconcile(url, cron_secret) again.';
  end if;
  -- pg_net sends it later, from its own worker; the cron job does not wait for reconcile.
  -- The timeout is the route's longest run (maxDuration 300 s in vercel.json).
  return net.http_post(
    url := v_url,
    body := '{}'::jsonb,
    params := '{}'::jsonb,
    headers := jsonb_build_object('Authorization', 'Bearer ' || v_secret,
                                  'Content-Type', 'application/json'),
    timeout_milliseconds := 300000);
end;
$$;

create or replace function public.schedule_reconcile(
  p_url text, p_cron_secret text, p_schedule text default '* * * * *'
) returns bigint
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  if p_url is null or p_url !~ '^https?://[^/\s]+' then
    raise exception 'reconcile schedule: p_url must be an http(s) URL'
      using errcode = 'invalid_parameter_value';
  elsif nullif(btrim(p_cron_secret), '') is null then
    raise exception 'reconcile schedule: p_cron_secret is required'
      using errcode = 'invalid_parameter_value';
  elsif nullif(btrim(p_schedule), '') is null then
    raise exception 'reconcile schedule: p_schedule is required'
      using errcode = 'invalid_parameter_value';
  end if;
  perform private.require_schedule_extensions();
  perform private.put_vault_secret('reconcile_url', btrim(p_url),
                                   'replicate-webhooks: the reconcile route pg_cron calls');
  perform private.put_vault_secret('reconcile_cron_secret', btrim(p_cron_secret),
                                   'replicate-webhooks: CRON_SECRET, sent as the bearer token');
  -- Same name, same role: pg_cron replaces the job instead of adding a second one.
  return cron.schedule('replicate-webhooks-reconcile', btrim(p_schedule),
                       'select private.call_reconcile()');
end;
$$;

create or replace function public.unschedule_reconcile()
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  v_job bigint;
begin
  perform private.require_schedule_extensions();
  select j.jobid into v_job from cron.job j
    where j.jobname = 'replicate-webhooks-reconcile' and j.username = current_user;
  if v_job is not null then
    perform cron.unschedule(v_job);
  end if;
  delete from vault.secrets s where s.name in ('reconcile_url', 'reconcile_cron_secret');
  return v_job is not null;
end;
$$;

-- The schedule is set up by the service role or the owner only; the job's own function is
-- the owner's (the cron job runs as the role that scheduled it).
revoke execute on function private.call_reconcile() from service_role;
revoke execute on function private.put_vault_secret(text, text, text) from service_role;
grant execute on function public.schedule_reconcile(text, text, text) to service_role;
grant execute on function public.unschedule_reconcile() to service_role;
