-- What a Supabase project has before any migration runs, for the local stack:
-- the API roles and their default privileges, the extensions schema, pgTAP, pg_cron, and
-- stand-ins for Auth, pg_net, Vault and Realtime's database side. scripts/stack runs it
-- on every `up`, so each statement may run again; the black-box tests run it on the
-- databases of their own (tests/api/helpers.rs).

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$$;
grant anon, authenticated, service_role to authenticator;
grant usage on schema public to anon, authenticated, service_role;
-- Supabase grants the API roles everything in public by default; row level security is
-- what restricts them. Set once, when the project is new, as on Supabase: migrations may
-- change these defaults and a later `up` must not put them back.
do $$
begin
  if not exists (select 1 from pg_default_acl
                 where defaclrole = 'postgres'::regrole and defaclnamespace = 'public'::regnamespace) then
    alter default privileges for role postgres in schema public
      grant all on tables to anon, authenticated, service_role;
    alter default privileges for role postgres in schema public
      grant all on sequences to anon, authenticated, service_role;
    alter default privileges for role postgres in schema public
      grant all on functions to anon, authenticated, service_role;
  end if;
end
$$;

create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;
-- As on Supabase, the postgres role finds extensions' objects without a schema prefix.
alter role postgres set search_path = "$user", public, extensions;
-- pgTAP for the SQL tests (supabase/tests/database), when installed (scripts/install).
do $$
begin
  if exists (select 1 from pg_available_extensions where name = 'pgtap') then
    create extension if not exists pgtap with schema extensions;
  end if;
end
$$;

-- A small stand-in for Supabase Auth: the users table and the claim helpers that row
-- level security policies call.
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;
create table if not exists auth.users (
  id uuid primary key default gen_random_uuid(),
  email text,
  created_at timestamptz not null default now()
);
create or replace function auth.jwt() returns jsonb
  language sql stable
  as $$ select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb $$;
create or replace function auth.uid() returns uuid
  language sql stable
  as $$ select nullif(auth.jwt() ->> 'sub', '')::uuid $$;
create or replace function auth.role() returns text
  language sql stable
  as $$ select coalesce(auth.jwt() ->> 'role', current_user) $$;

-- Supabase Cron: the real pg_cron, when the server preloads it (scripts/install installs it
-- and pg_conf_cron loads it).
do $$
begin
  -- Only in the database pg_cron serves (the tests' own databases run this file too).
  if current_setting('shared_preload_libraries') ~ 'pg_cron'
     and current_database() = coalesce(nullif(current_setting('cron.database_name', true), ''), 'postgres')
     and exists (select 1 from pg_available_extensions where name = 'pg_cron') then
    -- In pg_catalog, where Supabase's dashboard puts it: the advisors warn about an
    -- extension in public. Stacks made before had it in public; it cannot be moved, so
    -- it is made again there when no job would be lost.
    if exists (select 1 from pg_extension
               where extname = 'pg_cron' and extnamespace = 'public'::regnamespace) then
      -- Nested: cron.job is only there when pg_cron is.
      if not exists (select 1 from cron.job) then
        drop extension pg_cron;
      end if;
    end if;
    create extension if not exists pg_cron with schema pg_catalog;
  end if;
end
$$;

-- Stand-ins for pg_net and Supabase Vault, which no package here provides (never part of
-- the migrations). Same signatures; net.http_post and net.http_get send nothing but record
-- each call in net.stand_in_requests, so a test can see what pg_cron's job would send.
-- Vault keeps its secrets in clear here: nothing real is stored in a local stack.
create schema if not exists net;
create table if not exists net.stand_in_requests (
  id                   bigint generated always as identity primary key,
  method               text not null,
  url                  text not null,
  body                 jsonb,
  params               jsonb,
  headers              jsonb,
  timeout_milliseconds integer,
  created_at           timestamptz not null default now()
);
create or replace function net.http_post(
  url text, body jsonb default '{}'::jsonb, params jsonb default '{}'::jsonb,
  headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds integer default 5000
) returns bigint
  language sql volatile set search_path = ''
  as $$ insert into net.stand_in_requests (method, url, body, params, headers, timeout_milliseconds)
        values ('POST', url, body, params, headers, timeout_milliseconds) returning id $$;
create or replace function net.http_get(
  url text, params jsonb default '{}'::jsonb, headers jsonb default '{}'::jsonb,
  timeout_milliseconds integer default 5000
) returns bigint
  language sql volatile set search_path = ''
  as $$ insert into net.stand_in_requests (method, url, params, headers, timeout_milliseconds)
        values ('GET', url, params, headers, timeout_milliseconds) returning id $$;

create schema if not exists vault;
create table if not exists vault.secrets (
  id          uuid primary key default gen_random_uuid(),
  name        text unique,
  description text not null default '',
  secret      text not null,
  key_id      uuid,
  nonce       bytea,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now()
);
create or replace view vault.decrypted_secrets as
  select id, name, description, secret, secret as decrypted_secret, key_id, nonce,
         created_at, updated_at
  from vault.secrets;
create or replace function vault.create_secret(
  new_secret text, new_name text default null, new_description text default '',
  new_key_id uuid default null
) returns uuid
  language sql volatile set search_path = ''
  as $$ insert into vault.secrets (secret, name, description, key_id)
        values (new_secret, new_name, coalesce(new_description, ''), new_key_id) returning id $$;
create or replace function vault.update_secret(
  secret_id uuid, new_secret text default null, new_name text default null,
  new_description text default null, new_key_id uuid default null
) returns void
  language sql volatile set search_path = ''
  as $$ update vault.secrets set secret = coalesce(new_secret, secret), name = coalesce(new_name, name),
          description = coalesce(new_description, description),
          key_id = coalesce(new_key_id, key_id), updated_at = now()
        where id = secret_id $$;
-- As on Supabase, only postgres (and what it grants) reaches them.
revoke all on schema net, vault from public;
revoke all on all functions in schema net, vault from public;

-- A stand-in for Supabase Realtime's database side (the Realtime server does not run
-- here): realtime.messages, where Broadcast from the database writes, with row level
-- security on as on Supabase; realtime.send, which records a message there; and
-- realtime.topic(), which reads the topic being joined from the realtime.topic setting, as
-- Realtime sets it when it checks a subscriber's policies (a test sets it by hand).
create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;
create table if not exists realtime.messages (
  id          uuid primary key default gen_random_uuid(),
  topic       text not null,
  extension   text not null,
  payload     jsonb,
  event       text,
  private     boolean default false,
  updated_at  timestamp not null default now(),
  inserted_at timestamp not null default now()
);
alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to anon, authenticated, service_role;
create or replace function realtime.topic() returns text
  language sql stable
  as $$ select nullif(current_setting('realtime.topic', true), '')::text $$;
-- As Supabase's: a failed send is a warning, never the caller's error.
create or replace function realtime.send(
  payload jsonb, event text, topic text, private boolean default true
) returns void
  language plpgsql volatile set search_path = ''
  as $$
begin
  insert into realtime.messages (payload, event, topic, private, extension)
    values (payload, event, topic, private, 'broadcast');
exception when others then
  raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
end;
$$;
