-- The copy lease: one holder at a time, expiring, released only by its holder, never on a
-- finished job.
begin;
\ir ../fixtures/jobs.psql
select plan(9);

set local role service_role;
insert into public.predictions (id, user_id, credits_cost)
  values ('00000000-0000-4000-8000-0000000000c1', gen_random_uuid(), 1);
insert into public.models (id, user_id, status)
  values ('00000000-0000-4000-8000-0000000000c2', gen_random_uuid(), 'succeeded');

select ok(public.claim_copy('prediction', '00000000-0000-4000-8000-0000000000c1', 'a', 60),
  'a free job is claimed');
select ok(not public.claim_copy('upscale', '00000000-0000-4000-8000-0000000000c1', 'b', 60),
  'another holder waits while the lease runs');
select ok(public.claim_copy('prediction', '00000000-0000-4000-8000-0000000000c1', 'a', 60),
  'the holder may renew');
select public.release_copy('prediction', '00000000-0000-4000-8000-0000000000c1', 'b');
select ok(not public.claim_copy('prediction', '00000000-0000-4000-8000-0000000000c1', 'b', 60),
  'only the holder releases its lease');
select public.release_copy('prediction', '00000000-0000-4000-8000-0000000000c1', 'a');
select ok(public.claim_copy('prediction', '00000000-0000-4000-8000-0000000000c1', 'b', 60),
  'a released lease is free');
update public.predictions set copy_lease_until = now() - interval '1 second'
  where id = '00000000-0000-4000-8000-0000000000c1';
select ok(public.claim_copy('prediction', '00000000-0000-4000-8000-0000000000c1', 'c', 60),
  'an expired lease is free: a killed function does not hold the job');
select is((select copy_lease_holder from public.predictions
           where id = '00000000-0000-4000-8000-0000000000c1'), 'c', 'the lease names its holder');
select ok(not public.claim_copy('model', '00000000-0000-4000-8000-0000000000c2', 'a', 60),
  'a finished job has nothing to copy');
select throws_ok($$select public.claim_copy('dataset', gen_random_uuid(), 'a', 60)$$,
  '22023', null, 'an unknown kind is refused');

reset role;
select * from finish();
rollback;
