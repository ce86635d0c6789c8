-- Claims and completions of a batch of steps as a few set-based statements
-- instead of a loop calling a function per step, each of whose statements
-- paid its own executor start-up and nested function call (in a profile of
-- the bench, executor start-up, plan lookup and plpgsql calls were about a
-- third of PostgreSQL's CPU). Same row locks, each batch's taken in uuid
-- order, same compare-and-swap, same transitions and answers as migrations
-- 008-009.
-- Steps are found by primary key only: the rows are locked in a
-- MATERIALIZED step, so no status condition reaches the scan (see migration
-- 009 for why it must not).

-- Appends one transition to each step of p_steps (distinct; each row
-- locked by the caller): the step's most recent transition stops being the
-- most recent and the new one gets the next sort key.
CREATE FUNCTION tasker_append_step_transitions(p_steps uuid[], p_from text[], p_to text[], p_meta jsonb[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_prev_steps uuid[];
  v_prev_sorts integer[];
BEGIN
  WITH prev AS (
    UPDATE tasker_workflow_step_transitions t SET most_recent = false
     WHERE t.step_uuid = ANY (p_steps) AND t.most_recent
    RETURNING t.step_uuid, t.sort_key
  )
  SELECT array_agg(prev.step_uuid), array_agg(prev.sort_key) INTO v_prev_steps, v_prev_sorts FROM prev;
  INSERT INTO tasker_workflow_step_transitions (step_uuid, from_state, to_state, metadata, sort_key, most_recent)
  SELECT u.step_uuid, coalesce(u.from_state, ''), u.to_state, coalesce(u.meta, '{}'), coalesce(p.sort_key, 0) + 1, true
    FROM unnest(p_steps, p_from, p_to, p_meta) AS u(step_uuid, from_state, to_state, meta)
    LEFT JOIN unnest(v_prev_steps, v_prev_sorts) AS p(step_uuid, sort_key) ON p.step_uuid = u.step_uuid;
END $$;

CREATE OR REPLACE FUNCTION tasker_claim_steps(p_steps uuid[], p_worker text, p_stale_after interval, p_async_commit boolean)
RETURNS TABLE (step_uuid uuid, task_uuid uuid, step_name text, handler_callable text, attempts integer,
               retryable boolean, max_attempts integer, backoff_base_ms integer,
               max_backoff_ms integer, timeout_seconds integer, task_row jsonb, step_row jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_claim uuid[];
  v_stale uuid[];
  v_attempt integer[];
BEGIN
  IF p_async_commit THEN
    PERFORM set_config('synchronous_commit', 'off', true);
  END IF;
  -- Enqueued steps are claimed; a step in progress is taken over only when
  -- its claim went stale (no heartbeat for p_stale_after).
  WITH locked AS MATERIALIZED (
    SELECT s.step_uuid, s.status, s.attempts, coalesce(s.heartbeat_at, s.started_at) AS alive_at
      FROM tasker_workflow_steps s WHERE s.step_uuid = ANY (p_steps)
     ORDER BY s.step_uuid FOR UPDATE
  ), claimable AS (
    SELECT l.step_uuid, l.attempts, l.status = 'in_progress' AS stale
      FROM locked l
     WHERE l.status = 'enqueued'
        OR (l.status = 'in_progress' AND l.alive_at < clock_timestamp() - p_stale_after)
  )
  SELECT array_agg(c.step_uuid ORDER BY c.step_uuid), array_agg(c.attempts + 1 ORDER BY c.step_uuid),
         coalesce(array_agg(c.step_uuid ORDER BY c.step_uuid) FILTER (WHERE c.stale), '{}')
    INTO v_claim, v_attempt, v_stale
    FROM claimable c;
  IF v_claim IS NULL THEN
    RETURN;
  END IF;
  IF cardinality(v_stale) > 0 THEN
    PERFORM tasker_append_step_transitions(v_stale, array_fill('in_progress'::text, ARRAY[cardinality(v_stale)]),
      array_fill('enqueued'::text, ARRAY[cardinality(v_stale)]),
      array_fill(jsonb_build_object('recovered', 'claim went stale: its worker stopped without reporting'),
                 ARRAY[cardinality(v_stale)]));
  END IF;
  PERFORM tasker_append_step_transitions(v_claim, array_fill('enqueued'::text, ARRAY[cardinality(v_claim)]),
    array_fill('in_progress'::text, ARRAY[cardinality(v_claim)]),
    ARRAY(SELECT jsonb_build_object('worker', p_worker, 'attempt', a) FROM unnest(v_attempt) WITH ORDINALITY AS u(a, i)
           ORDER BY i));
  RETURN QUERY
    WITH claimed AS (
      UPDATE tasker_workflow_steps s
         SET status = 'in_progress', attempts = s.attempts + 1, started_at = clock_timestamp(),
             enqueued_at = CASE WHEN s.step_uuid = ANY (v_stale) THEN clock_timestamp() ELSE s.enqueued_at END,
             heartbeat_at = clock_timestamp(), updated_at = clock_timestamp()
       WHERE s.step_uuid = ANY (v_claim)
      RETURNING s.step_uuid, s.task_uuid, s.attempts, s.named_step_id, to_jsonb(s.*) AS step_row
    )
    SELECT c.step_uuid, c.task_uuid, ns.name, ns.handler_callable, c.attempts, ns.retryable, ns.max_attempts,
           ns.backoff_base_ms, ns.max_backoff_ms, ns.timeout_seconds, to_jsonb(t.*), c.step_row
      FROM claimed c
      JOIN tasker_named_steps ns ON ns.named_step_id = c.named_step_id
      JOIN tasker_tasks t ON t.task_uuid = c.task_uuid;
END $$;

-- in_progress -> complete for each step of p_steps (distinct) whose attempt
-- is still p_attempts' (results and transition metadata alongside). Returns
-- one row per step: applied is false when the step was no longer in that
-- attempt (cancelled, resolved, or taken over); its result is then kept in
-- the history as a late result, as tasker_complete_step does.
CREATE FUNCTION tasker_complete_steps(p_steps uuid[], p_attempts integer[], p_results jsonb[], p_meta jsonb[])
RETURNS TABLE (step_uuid uuid, applied boolean) LANGUAGE plpgsql AS $$
DECLARE
  v_done uuid[];
  v_done_meta jsonb[];
  r record;
BEGIN
  IF cardinality(p_steps) <> (SELECT count(DISTINCT u.s) FROM unnest(p_steps) AS u(s)) THEN
    RAISE EXCEPTION 'tasker_complete_steps: a step appears more than once in %', p_steps
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  WITH input AS (
    SELECT * FROM unnest(p_steps, p_attempts) AS u(step_uuid, attempt)
  ), locked AS MATERIALIZED (
    SELECT s.step_uuid, s.status, s.attempts
      FROM tasker_workflow_steps s WHERE s.step_uuid = ANY (p_steps)
     ORDER BY s.step_uuid FOR UPDATE
  )
  SELECT coalesce(array_agg(l.step_uuid), '{}') INTO v_done
    FROM locked l JOIN input i ON i.step_uuid = l.step_uuid
   WHERE l.status = 'in_progress' AND l.attempts = i.attempt;

  UPDATE tasker_workflow_steps s
     SET status = 'complete', results = u.results, retry_at = NULL,
         completed_at = clock_timestamp(), updated_at = clock_timestamp()
    FROM unnest(p_steps, p_results) AS u(step_uuid, results)
   WHERE s.step_uuid = u.step_uuid AND u.step_uuid = ANY (v_done);
  SELECT coalesce(array_agg(u.s ORDER BY u.i), '{}'), coalesce(array_agg(u.m ORDER BY u.i), '{}')
    INTO v_done, v_done_meta
    FROM unnest(p_steps, p_meta) WITH ORDINALITY AS u(s, m, i) WHERE u.s = ANY (v_done);
  PERFORM tasker_append_step_transitions(v_done,
    array_fill('in_progress'::text, ARRAY[cardinality(v_done)]),
    array_fill('complete'::text, ARRAY[cardinality(v_done)]), v_done_meta);

  FOR r IN SELECT * FROM unnest(p_steps, p_attempts, p_results, p_meta) AS u(s, a, res, m)
            WHERE u.s <> ALL (v_done) LOOP
    PERFORM tasker_record_late_result(r.s, r.res, r.m || jsonb_build_object('attempt', r.a));
  END LOOP;
  RETURN QUERY SELECT u.s, u.s = ANY (v_done) FROM unnest(p_steps) AS u(s);
END $$;
