-- private.decide from a table of cases: the stored state and one event in, the outcome
-- and what to change out. The function is pure, so no fixtures are needed.
--
-- Columns: stored status, event status, stored output, event output, stored Replicate id,
-- event Replicate id, the event names the row (train/predict), another row holds the
-- event's id, credits_cost, already refunded, applied outcome (null: 'applied');
-- expected outcome, status after, changes (output = take the event's output, id = fill
-- in the Replicate id, refund, complete = set completed_at), detail.
begin;
select plan(47);

create temp table decide_case (
  n serial, was text, event text, old_out jsonb, new_out jsonb, old_id text, new_id text,
  names boolean, taken boolean, cost integer, refunded boolean, applied text,
  outcome text, status text, changes text, detail text
) on commit drop;

insert into decide_case (was, event, old_out, new_out, old_id, new_id, names, taken, cost, refunded, applied,
                         outcome, status, changes, detail) values
  -- the status order: pending < starting < processing < every terminal status
  ('pending', 'starting', null, null, 'r', 'r', false, false, 0, false, null, 'applied', 'starting', '', 'pending -> starting'),
  ('pending', 'processing', null, null, 'r', 'r', false, false, 0, false, null, 'applied', 'processing', '', 'pending -> processing'),
  ('starting', 'processing', null, null, 'r', 'r', false, false, 0, false, null, 'applied', 'processing', '', 'starting -> processing'),
  ('pending', 'pending', null, null, 'r', 'r', false, false, 0, false, null, 'applied', 'pending', '', 'pending -> pending'),
  ('processing', 'processing', null, null, 'r', 'r', false, false, 0, false, null, 'applied', 'processing', '', 'processing -> processing'),
  ('processing', 'starting', null, null, 'r', 'r', false, false, 0, false, null, 'stale', 'processing', '', 'stale: starting after processing'),
  ('starting', 'pending', null, null, 'r', 'r', false, false, 0, false, null, 'stale', 'starting', '', 'stale: pending after starting'),
  ('processing', 'succeeded', null, null, 'r', 'r', false, false, 0, false, null, 'applied', 'succeeded', 'complete', 'processing -> succeeded'),
  ('pending', 'succeeded', null, null, 'r', 'r', false, false, 0, false, null, 'applied', 'succeeded', 'complete', 'pending -> succeeded'),
  -- after a terminal status nothing moves: the same status again is a duplicate
  ('succeeded', 'succeeded', null, null, 'r', 'r', false, false, 5, false, null, 'duplicate', 'succeeded', '', 'duplicate: already succeeded'),
  ('failed', 'failed', null, null, 'r', 'r', false, false, 5, true, null, 'duplicate', 'failed', '', 'duplicate: already failed'),
  ('succeeded', 'failed', null, null, 'r', 'r', false, false, 5, false, null, 'stale', 'succeeded', '', 'stale: failed after succeeded'),
  ('failed', 'canceled', null, null, 'r', 'r', false, false, 5, true, null, 'stale', 'failed', '', 'stale: canceled after failed'),
  ('succeeded', 'processing', null, '["a","b","c"]', 'r', 'r', false, false, 0, false, null, 'stale', 'succeeded', '', 'stale: processing after succeeded'),
  ('canceled', 'pending', null, null, 'r', 'r', false, false, 0, false, null, 'stale', 'canceled', '', 'stale: pending after canceled'),
  -- ending without success refunds the cost once; success, a free job or a refunded one do not
  ('pending', 'failed', null, null, 'r', 'r', false, false, 20, false, null, 'applied', 'failed', 'refund complete', 'pending -> failed'),
  ('starting', 'canceled', null, null, 'r', 'r', false, false, 3, false, null, 'applied', 'canceled', 'refund complete', 'starting -> canceled'),
  ('processing', 'aborted', null, null, 'r', 'r', false, false, 4, false, null, 'applied', 'aborted', 'refund complete', 'processing -> aborted'),
  ('processing', 'failed', null, null, 'r', 'r', false, false, 0, false, null, 'applied', 'failed', 'complete', 'processing -> failed'),
  ('processing', 'failed', null, null, 'r', 'r', false, false, 5, true, null, 'applied', 'failed', 'complete', 'processing -> failed'),
  ('processing', 'succeeded', null, null, 'r', 'r', false, false, 5, false, null, 'applied', 'succeeded', 'complete', 'processing -> succeeded'),
  -- reconcile names its own outcome; stale stays stale
  ('processing', 'aborted', null, null, 'r', 'r', false, false, 4, false, 'reconciled', 'reconciled', 'aborted', 'refund complete', 'processing -> aborted'),
  ('succeeded', 'aborted', null, null, 'r', 'r', false, false, 4, false, 'reconciled', 'stale', 'succeeded', '', 'stale: aborted after succeeded'),
  -- output on same-rank events never shrinks (SQL null, JSON null, arrays, strings, objects)
  ('processing', 'processing', '["a"]', '["a","b"]', 'r', 'r', false, false, 0, false, null, 'applied', 'processing', 'output', 'processing -> processing'),
  ('processing', 'processing', '["a","b"]', '["a"]', 'r', 'r', false, false, 0, false, null, 'stale', 'processing', '', 'stale: less output than stored'),
  ('processing', 'processing', '["a"]', null, 'r', 'r', false, false, 0, false, null, 'stale', 'processing', '', 'stale: less output than stored'),
  ('processing', 'processing', '["a"]', 'null', 'r', 'r', false, false, 0, false, null, 'stale', 'processing', '', 'stale: less output than stored'),
  ('processing', 'processing', '"Hello wor"', '"Hello"', 'r', 'r', false, false, 0, false, null, 'stale', 'processing', '', 'stale: less output than stored'),
  ('processing', 'processing', '"Hello"', '"Hello wor"', 'r', 'r', false, false, 0, false, null, 'applied', 'processing', 'output', 'processing -> processing'),
  ('processing', 'processing', '{"a":1,"b":2}', '{"a":1}', 'r', 'r', false, false, 0, false, null, 'stale', 'processing', '', 'stale: less output than stored'),
  ('processing', 'processing', '{"a":1}', '{"b":2}', 'r', 'r', false, false, 0, false, null, 'applied', 'processing', 'output', 'processing -> processing'),
  ('processing', 'processing', '["a","b"]', '"text"', 'r', 'r', false, false, 0, false, null, 'applied', 'processing', 'output', 'processing -> processing'),
  ('processing', 'processing', '12', '3', 'r', 'r', false, false, 0, false, null, 'applied', 'processing', 'output', 'processing -> processing'),
  ('pending', 'processing', null, '["a"]', 'r', 'r', false, false, 0, false, null, 'applied', 'processing', 'output', 'pending -> processing'),
  -- a higher status carries the authoritative output: strings and objects are taken even
  -- when shorter, arrays still never shrink, null never replaces
  ('processing', 'succeeded', '"Hello world, long"', '"s3://b/0.txt"', 'r', 'r', false, false, 0, false, null, 'applied', 'succeeded', 'output complete', 'processing -> succeeded'),
  ('processing', 'succeeded', '{"a":1,"b":2}', '{"a":"s3"}', 'r', 'r', false, false, 0, false, null, 'applied', 'succeeded', 'output complete', 'processing -> succeeded'),
  ('processing', 'succeeded', '["a","b"]', '["x"]', 'r', 'r', false, false, 0, false, null, 'applied', 'succeeded', 'complete', 'processing -> succeeded'),
  ('starting', 'processing', '["a"]', null, 'r', 'r', false, false, 0, false, null, 'applied', 'processing', '', 'starting -> processing'),
  -- Replicate ids: a named row with another run's id is stale before anything else
  ('processing', 'failed', null, null, 'r1', 'r2', true, false, 5, false, null, 'stale', 'processing', '', 'stale: replicate id mismatch'),
  ('succeeded', 'succeeded', null, null, 'r1', 'r2', true, false, 0, false, null, 'stale', 'succeeded', '', 'stale: replicate id mismatch'),
  ('processing', 'failed', null, null, 'r1', 'r2', false, false, 5, false, null, 'applied', 'failed', 'refund complete', 'processing -> failed'),
  -- a row without an id takes the event's, unless another row holds it
  ('pending', 'starting', null, null, null, 'r2', true, false, 0, false, null, 'applied', 'starting', 'id', 'pending -> starting'),
  ('pending', 'processing', null, null, null, 'r2', true, true, 0, false, null, 'stale', 'pending', '', 'stale: replicate id belongs to another job'),
  ('processing', 'starting', null, null, null, 'r2', true, true, 0, false, null, 'stale', 'processing', '', 'stale: starting after processing'),
  ('pending', 'starting', null, null, 'r1', 'r1', true, true, 0, false, null, 'applied', 'starting', '', 'pending -> starting'),
  ('pending', 'starting', null, null, null, null, true, false, 0, false, null, 'applied', 'starting', '', 'pending -> starting'),
  ('pending', 'failed', '"x"', '"xy"', null, 'r2', true, false, 7, false, null, 'applied', 'failed', 'output id refund complete', 'pending -> failed');

select is(
  concat_ws(' | ', d.outcome, d.status,
            concat_ws(' ', case when d.take_output then 'output' end,
                           case when d.fill_replicate_id then 'id' end,
                           case when d.refund then 'refund' end,
                           case when d.completes then 'complete' end),
            d.detail),
  concat_ws(' | ', c.outcome, c.status, c.changes, c.detail),
  format('case %s: %s -> %s (output %s -> %s, id %s -> %s%s%s, cost %s%s)', c.n, c.was, c.event,
         coalesce(c.old_out::text, 'none'), coalesce(c.new_out::text, 'none'),
         coalesce(c.old_id, 'none'), coalesce(c.new_id, 'none'),
         case when c.names then ', named' else '' end, case when c.taken then ', taken' else '' end,
         c.cost, case when c.refunded then ', refunded' else '' end))
from decide_case c
cross join lateral private.decide(
  c.was, c.event, c.old_out, c.new_out, c.old_id, c.new_id,
  c.names, c.taken, c.cost, c.refunded, coalesce(c.applied, 'applied')) d
order by c.n;

select * from finish();
rollback;
