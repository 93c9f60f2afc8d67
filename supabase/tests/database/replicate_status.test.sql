-- The status vocabulary (public.replicate_status) and its order (private.status_rank).
begin;
select plan(9);

select is(
  (select array_agg(s || ' ' || private.status_rank(s::public.replicate_status) || ' '
                    || private.is_terminal(s::public.replicate_status) order by n)
   from unnest(array['pending', 'starting', 'processing', 'succeeded', 'failed', 'canceled', 'aborted'])
        with ordinality v(s, n)),
  array['pending 0 false', 'starting 1 false', 'processing 2 false', 'succeeded 3 true',
        'failed 3 true', 'canceled 3 true', 'aborted 3 true'],
  'the vocabulary, ranked: pending < starting < processing < every terminal status');
select throws_ok($$select 'exploded'::public.replicate_status$$, '23514', null, 'a status outside it is refused');
select throws_ok($$select 'Failed'::public.replicate_status$$, '23514', null, 'statuses are lower case');

select col_type_is('public', 'models', 'status', 'replicate_status', 'models.status is a replicate_status');
select col_type_is('public', 'predictions', 'status', 'replicate_status', 'predictions.status is a replicate_status');
select col_default_is('public', 'predictions', 'status', 'pending', 'a new job is pending');
select throws_ok(
  $$insert into public.models (user_id, status) values (gen_random_uuid(), 'exploded')$$,
  '23514', null, 'a job cannot store a status outside the vocabulary');

select is(private.parse_status('canceled'), 'canceled'::public.replicate_status, 'parse_status reads a status');
select throws_ok($$select private.parse_status('exploded')$$, '22023', 'unknown status: exploded',
  'parse_status answers invalid_parameter_value for anything else');

select * from finish();
rollback;
