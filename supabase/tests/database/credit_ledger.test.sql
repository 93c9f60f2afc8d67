-- The ledger's own guarantees, whatever the calling code does: at most one refund row per
-- job, a refund names exactly one job, and deleting a refunded job keeps its money history.
begin;
\ir ../fixtures/jobs.psql
select plan(6);

insert into public.credit_ledger (user_id, delta, reason, model_id) values (:'u1', 20, 'refund', :'m2');

select throws_ok(
  format($$insert into public.credit_ledger (user_id, delta, reason, model_id) values (%L, 20, 'refund', %L)$$,
         :'u1', :'m2'),
  '23505', null, 'a second refund row for a job is refused');
select throws_ok(
  format($$insert into public.credit_ledger (user_id, delta, reason) values (%L, 20, 'refund')$$, :'u1'),
  '23514', null, 'a refund row without a job is refused');
select throws_ok(
  format($$insert into public.credit_ledger (user_id, delta, reason, model_id, prediction_id)
           values (%L, 20, 'refund', %L, %L)$$, :'u1', :'m1', :'p1'),
  '23514', null, 'a refund row naming two jobs is refused');
select lives_ok(
  format($$insert into public.credit_ledger (user_id, delta, reason) values (%L, 100, 'purchase')$$, :'u1'),
  'a purchase row names no job');
select lives_ok(format($$delete from public.models where id = %L$$, :'m2'), 'a refunded job can be deleted');
select is(
  (select count(*)::integer from public.credit_ledger
   where reason = 'refund' and model_id is null and prediction_id is null and delta = 20),
  1, 'its refund row stays, without the link');

select * from finish();
rollback;
