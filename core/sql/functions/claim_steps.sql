-- Claims the steps whose messages a worker read, in one statement: a step
-- is claimed (-> in_progress, attempt + 1, history appended) when it is
-- enqueued, waiting for a retry that is due (its delayed message arrived),
-- or in progress with a stale claim (no heartbeat for p_stale_after: its
-- worker is gone; the history records the takeover), and only when its
-- namespace is one of p_namespaces, the worker's own. Returns a row per
-- step claimed (taken_over: the claim took the step over from a stale
-- one), with its task's correlation id, its handler's settings (the
-- template's handler.initialization) and the task's and the step's rows
-- as the claim left them (a Ruby worker builds its handler and models
-- from them without another call); a step left out is a duplicate
-- delivery or not this worker's, and its message is acked.
--
-- Rows are locked by primary key alone, in uuid order (two workers
-- claiming overlapping batches lock in one order).
-- p_async_commit: losing a claim in a database crash only means the step
-- is claimed again; asked for when the queues are in this database, whose
-- lost commit takes the later messages and acks with it.
CREATE FUNCTION tasker_claim_steps(p_steps uuid[], p_worker text, p_namespaces text[], p_stale_after interval,
                                   p_async_commit boolean)
RETURNS TABLE (step_uuid uuid, task_uuid uuid, correlation_id uuid, namespace text, step_name text,
               handler_callable text, handler_config jsonb,
               decision boolean, attempts integer, retryable boolean, max_attempts integer, backoff_base_ms integer,
               max_backoff_ms integer, timeout_seconds integer, task_row jsonb, step_row jsonb, taken_over boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  IF p_async_commit THEN
    PERFORM set_config('synchronous_commit', 'off', true);
  END IF;
  RETURN QUERY
    WITH locked AS MATERIALIZED (
      SELECT s.step_uuid, s.status, s.transitions, s.attempts, s.retry_at, s.named_step_id,
             coalesce(s.heartbeat_at, s.started_at) AS alive_at
        FROM tasker_workflow_steps s WHERE s.step_uuid = ANY (p_steps)
       ORDER BY s.step_uuid FOR UPDATE
    ), claimable AS MATERIALIZED (
      SELECT l.step_uuid, l.status, l.transitions, l.attempts + 1 AS attempt,
             (l.status = 'in_progress') AS stale, ns.*
        FROM locked l JOIN tasker_named_steps ns ON ns.named_step_id = l.named_step_id
       WHERE ns.namespace = ANY (p_namespaces)
         AND (l.status = 'enqueued'
              OR (l.status = 'waiting_for_retry' AND l.retry_at <= clock_timestamp() + interval '1 second')
              OR (l.status = 'in_progress' AND l.alive_at < clock_timestamp() - p_stale_after))
    ), history AS (
      INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state, metadata)
      SELECT c.step_uuid, c.transitions + h.n, h.from_state, h.to_state, h.meta
        FROM claimable c
        CROSS JOIN LATERAL (
          SELECT 1 AS n, 'in_progress' AS from_state, 'enqueued' AS to_state,
                 jsonb_build_object('recovered', 'claim went stale: its worker stopped without reporting') AS meta
           WHERE c.stale
          UNION ALL
          SELECT CASE WHEN c.stale THEN 2 ELSE 1 END, CASE WHEN c.stale THEN 'enqueued' ELSE c.status END,
                 'in_progress', jsonb_build_object('worker', p_worker, 'attempt', c.attempt)
        ) AS h
    ), claimed AS (
      UPDATE tasker_workflow_steps s
         SET status = 'in_progress', attempts = c.attempt,
             transitions = s.transitions + CASE WHEN c.stale THEN 2 ELSE 1 END,
             started_at = clock_timestamp(), heartbeat_at = clock_timestamp(), updated_at = clock_timestamp(),
             enqueued_at = CASE WHEN c.stale THEN clock_timestamp() ELSE s.enqueued_at END
        FROM claimable c
       WHERE s.step_uuid = c.step_uuid
      RETURNING s.step_uuid, s.task_uuid, to_jsonb(s.*) AS step_row
    )
    SELECT c.step_uuid, c.task_uuid, t.correlation_id, cl.namespace, cl.name, cl.handler_callable,
           cl.handler_config, cl.decision, cl.attempt, cl.retryable, cl.max_attempts, cl.backoff_base_ms, cl.max_backoff_ms, cl.timeout_seconds,
           to_jsonb(t.*), c.step_row, cl.stale
      FROM claimed c
      JOIN claimable cl ON cl.step_uuid = c.step_uuid
      JOIN tasker_tasks t ON t.task_uuid = c.task_uuid
     ORDER BY c.step_uuid;
END $$;
