-- The decision: what one event does to one job, from the job's stored state and the event
-- alone. Pure (reads no table, writes nothing), so it is tested from a table of cases;
-- apply_replicate_event looks the facts up, calls it, and carries out what it says.
--
-- Rules, in order (ranks from private.status_rank):
--   1. train/predict naming a row whose Replicate id is set and differs from the event's:
--      stale ('replicate id mismatch'). The event belongs to another run.
--   2. stored status terminal: duplicate when the event repeats it, else stale.
--   3. event ranks lower than the stored status: stale.
--   4. same rank and the event carries less output than stored: stale.
--   5. the row has no Replicate id and another row of its table holds the event's: stale
--      ('replicate id belongs to another job').
--   6. otherwise applied (or reconciled, as the caller says): the status moves when the
--      event ranks higher; the Replicate id is filled in when the row has none; the output
--      is taken when it does not shrink; moving into a terminal status completes the job,
--      and one that did not succeed refunds credits_cost once (cost > 0, not yet refunded).
--
-- Output never shrinks (private.output_shrinks): SQL or JSON null never replaces a stored
-- value; an array never replaces a longer array. On same-rank events a string never
-- replaces a longer string and an object never replaces one with more keys. An event that
-- raises the status carries the later, authoritative output (file URLs already rewritten
-- to stored ones, which may be shorter), so for strings and objects it replaces what is
-- stored.

create or replace function private.output_shrinks(
  p_stored    jsonb,
  p_event     jsonb,
  p_same_rank boolean
) returns boolean
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_old  jsonb := nullif(p_stored, 'null'::jsonb);
  v_new  jsonb := nullif(p_event, 'null'::jsonb);
  v_type text  := jsonb_typeof(v_new);
begin
  if v_new is null or v_old is null then
    return v_new is null and v_old is not null;
  elsif v_type is distinct from jsonb_typeof(v_old) then
    return false;
  elsif v_type = 'array' then
    return jsonb_array_length(v_new) < jsonb_array_length(v_old);
  elsif not p_same_rank then
    return false;
  elsif v_type = 'string' then
    return char_length(v_new #>> '{}') < char_length(v_old #>> '{}');
  elsif v_type = 'object' then
    return (select count(*) from jsonb_object_keys(v_new))
         < (select count(*) from jsonb_object_keys(v_old));
  end if;
  return false;
end;
$$;

create or replace function private.decide(
  p_previous            public.replicate_status,
  p_event               public.replicate_status,
  p_stored_output       jsonb,
  p_event_output        jsonb,
  p_stored_replicate_id text,
  p_event_replicate_id  text,
  p_names_job           boolean,
  p_replicate_id_taken  boolean,
  p_credits_cost        integer,
  p_refunded            boolean,
  p_applied             text,
  out outcome           text,
  out detail            text,
  out status            public.replicate_status,
  out take_output       boolean,
  out fill_replicate_id boolean,
  out refund            boolean,
  out completes         boolean
)
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_was     integer := private.status_rank(p_previous);
  v_is      integer := private.status_rank(p_event);
  v_shrinks boolean := private.output_shrinks(p_stored_output, p_event_output, v_is = v_was);
  v_no_id   boolean := p_stored_replicate_id is null and p_event_replicate_id is not null;
begin
  status := p_previous;
  take_output := false;
  fill_replicate_id := false;
  refund := false;
  completes := false;
  outcome := 'stale';

  if p_names_job and p_stored_replicate_id <> p_event_replicate_id then
    detail := 'stale: replicate id mismatch';
  elsif private.is_terminal(p_previous) and p_event = p_previous then
    outcome := 'duplicate';
    detail := 'duplicate: already ' || p_previous;
  elsif private.is_terminal(p_previous) or v_is < v_was then
    detail := 'stale: ' || p_event || ' after ' || p_previous;
  elsif v_is = v_was and v_shrinks then
    detail := 'stale: less output than stored';
  elsif v_no_id and p_replicate_id_taken then
    detail := 'stale: replicate id belongs to another job';
  else
    outcome := p_applied;
    detail := p_previous || ' -> ' || p_event;
    if v_is > v_was then
      status := p_event;
    end if;
    take_output := nullif(p_event_output, 'null'::jsonb) is not null and not v_shrinks;
    fill_replicate_id := v_no_id;
    completes := private.is_terminal(p_event);
    refund := completes and p_event <> 'succeeded' and p_credits_cost > 0 and not p_refunded;
  end if;
end;
$$;
