-- Row level security: an authenticated user reads their own profile, jobs and ledger rows;
-- no policy lets anyone but the service role (which bypasses row level security) write, and
-- webhook_events has no policy at all. The same policies as before, now written out by
-- name instead of generated, and always through auth.uid() (Supabase's, or the local
-- stack's stand-in that reads the same JWT claims).
-- (select auth.uid()) is evaluated once per statement, not once per row.

drop policy if exists profiles_select_own on public.profiles;
drop policy if exists models_select_own on public.models;
drop policy if exists predictions_select_own on public.predictions;
drop policy if exists credit_ledger_select_own on public.credit_ledger;

create policy profiles_select_own on public.profiles
  for select to authenticated using (id = (select auth.uid()));
create policy models_select_own on public.models
  for select to authenticated using (user_id = (select auth.uid()));
create policy predictions_select_own on public.predictions
  for select to authenticated using (user_id = (select auth.uid()));
create policy credit_ledger_select_own on public.credit_ledger
  for select to authenticated using (user_id = (select auth.uid()));
