-- Dynamic fan-out (a step's `fan_out:`; its named step's `fan_out` is
-- {"from", "join", "child"}). Both functions are called only by
-- tasker_record_outcomes, only for outcomes of fan-out steps, under their
-- tasks' row locks.

-- "a string", "an object", "null": what a JSON value is, for messages.
CREATE FUNCTION tasker_fan_out_kind(p_value jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE coalesce(jsonb_typeof(p_value), 'null') WHEN 'null' THEN 'null' WHEN 'object' THEN 'an object'
                                                      WHEN 'array' THEN 'an array' ELSE 'a ' || jsonb_typeof(p_value) END
$$;

-- The outcomes of fan-out steps (p_fan_outs, a subset of p_steps) checked
-- before they are recorded: a completed one whose result has no array at
-- its `from` key becomes a permanent failure (TaskerCore::FanOutError,
-- naming the step and the key), so the step ends in error and no child is
-- made. Returns the outcome arrays, changed where so.
CREATE FUNCTION tasker_validate_fan_outs(p_fan_outs uuid[], p_steps uuid[], p_completed boolean[], p_payloads jsonb[],
                                      p_retryable boolean[])
RETURNS TABLE (completed boolean[], payloads jsonb[], retryable boolean[]) LANGUAGE sql AS $$
  WITH bad AS MATERIALIZED (
    SELECT s.step_uuid,
           jsonb_build_object(
             'class', 'TaskerCore::FanOutError',
             'message', format('step %s of %s/%s@%s fans out from %s, but its result %s',
                               to_jsonb(s.name), t.namespace, t.name, t.version, to_jsonb(ns.fan_out ->> 'from'),
                               CASE WHEN jsonb_typeof(u.payload) IS DISTINCT FROM 'object'
                                      THEN 'is ' || tasker_fan_out_kind(u.payload) || ', not an object with key '
                                           || to_jsonb(ns.fan_out ->> 'from')::text
                                    WHEN NOT u.payload ? (ns.fan_out ->> 'from')
                                      THEN 'has no key ' || to_jsonb(ns.fan_out ->> 'from')::text
                                    ELSE 'has ' || tasker_fan_out_kind(u.payload -> (ns.fan_out ->> 'from'))
                                         || ' at key ' || to_jsonb(ns.fan_out ->> 'from')::text || ', not an array' END),
             'backtrace', '[]'::jsonb, 'retryable', false) AS error
      FROM unnest(p_steps, p_completed, p_payloads) AS u(step_uuid, ok, payload)
      JOIN tasker_workflow_steps s ON s.step_uuid = u.step_uuid
      JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
      JOIN tasker_tasks t ON t.task_uuid = s.task_uuid
     WHERE u.step_uuid = ANY (p_fan_outs) AND u.ok
       AND coalesce(jsonb_typeof(u.payload -> (ns.fan_out ->> 'from')), '') <> 'array'
  )
  SELECT array_agg(u.ok AND b.step_uuid IS NULL ORDER BY u.i),
         array_agg(coalesce(b.error, u.payload) ORDER BY u.i),
         array_agg(u.retryable AND b.step_uuid IS NULL ORDER BY u.i)
    FROM unnest(p_steps, p_completed, p_payloads, p_retryable) WITH ORDINALITY AS u(step_uuid, ok, payload, retryable, i)
    LEFT JOIN bad b ON b.step_uuid = u.step_uuid
$$;

-- Makes the children of fan-out steps that just completed (p_steps), all
-- in one statement however many: per element of the step's result array
-- at `from`, in array order, a step `<fan-out step>[<index>]` of the
-- children's named step (pending, with its '' -> pending history, its
-- element in `input` and its index in `fan_out_index`, at its fan-out
-- step's position), an edge from the fan-out step to it and one from it to
-- the join. The caller (tasker_record_outcomes) then finds the children
-- ready like any dependent of a completed step, and the join waiting for
-- every child (for none when the array is empty). Returns how many
-- children were made.
CREATE FUNCTION tasker_fan_out(p_steps uuid[]) RETURNS bigint LANGUAGE sql AS $$
  WITH parents AS MATERIALIZED (
    SELECT s.step_uuid, s.task_uuid, s.name, s.position, s.results -> (ns.fan_out ->> 'from') AS items,
           c.named_step_id AS child_named_step_id, c.max_attempts, j.step_uuid AS join_uuid
      FROM tasker_workflow_steps s
      JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
      JOIN tasker_named_steps c ON c.template_id = ns.template_id AND c.name = ns.fan_out ->> 'child'
      JOIN tasker_workflow_steps j ON j.task_uuid = s.task_uuid AND j.name = ns.fan_out ->> 'join'
     WHERE s.step_uuid = ANY (p_steps) AND s.status = 'complete'
       AND jsonb_typeof(s.results -> (ns.fan_out ->> 'from')) = 'array'
  ), children AS MATERIALIZED (
    SELECT tasker_uuid_v7() AS step_uuid, p.task_uuid, p.step_uuid AS parent_uuid, p.join_uuid,
           p.name || '[' || (e.i - 1) || ']' AS name, p.name AS parent_name, p.position,
           p.child_named_step_id, p.max_attempts, e.value AS input, (e.i - 1)::integer AS fan_out_index
      FROM parents p
      CROSS JOIN LATERAL jsonb_array_elements(p.items) WITH ORDINALITY AS e(value, i)
  ), steps AS (
    INSERT INTO tasker_workflow_steps (step_uuid, task_uuid, named_step_id, name, position, max_attempts, status,
                                       transitions, input, fan_out_index)
    SELECT c.step_uuid, c.task_uuid, c.child_named_step_id, c.name, c.position, c.max_attempts, 'pending', 1,
           c.input, c.fan_out_index
      FROM children c
  ), history AS (
    INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state, metadata)
    SELECT c.step_uuid, 1, '', 'pending', jsonb_build_object('fan_out_of', c.parent_name, 'index', c.fan_out_index)
      FROM children c
  ), edges AS (
    INSERT INTO tasker_workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
    SELECT c.task_uuid, e.from_step_uuid, e.to_step_uuid
      FROM children c
      CROSS JOIN LATERAL (VALUES (c.parent_uuid, c.step_uuid), (c.step_uuid, c.join_uuid)) AS e(from_step_uuid, to_step_uuid)
  )
  SELECT count(*) FROM children
$$;
