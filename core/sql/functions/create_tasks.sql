-- Creates many tasks in one statement (TaskerCore.create_tasks): each
-- element of p_tasks, a JSON array of objects, is created as
-- tasker_create_task would create it alone, in array order, with the same
-- checks, the same idempotency (a repeated identity_key, within the array
-- or before it, returns the first task with created = false) and the same
-- first messages. One statement means one round trip, one transaction and
-- one commit for all of them: a creation costs PostgreSQL about half the
-- CPU it costs alone, and the caller's Ruby a fraction. An error in any
-- element (its template is not registered, say) fails the statement and
-- creates none of them.
-- An element's keys: namespace, name, version (required), context,
-- identity_key, traceparent, run_at (timestamptz) or delay_seconds (added
-- to this database's clock), timeout_seconds, priority.
-- Rows come back in array order.
CREATE FUNCTION tasker_create_tasks(p_tasks jsonb, p_send boolean, p_priority_aging_ms integer DEFAULT NULL)
RETURNS TABLE (task_uuid uuid, created boolean, task_row jsonb) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off AS $$
DECLARE
  r jsonb;
BEGIN
  IF jsonb_typeof(p_tasks) IS DISTINCT FROM 'array' THEN
    RAISE EXCEPTION 'tasker_create_tasks takes a JSON array of tasks, got %', coalesce(jsonb_typeof(p_tasks), 'null')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  FOR r IN SELECT e.value FROM jsonb_array_elements(p_tasks) WITH ORDINALITY AS e(value, i) ORDER BY e.i LOOP
    RETURN QUERY
      SELECT c.task_uuid, c.created, c.task_row
        FROM tasker_create_task(r ->> 'namespace', r ->> 'name', r ->> 'version', r -> 'context', r ->> 'identity_key',
                                p_send, r ->> 'traceparent',
                                coalesce((r ->> 'run_at')::timestamptz,
                                         clock_timestamp() + make_interval(secs => (r ->> 'delay_seconds')::float8)),
                                (r ->> 'timeout_seconds')::integer, (r ->> 'priority')::integer,
                                p_priority_aging_ms) AS c;
  END LOOP;
END $$;
