-- Advancing a batch of tasks as a few set-based statements instead of a
-- loop calling tasker_enqueue_ready_steps and tasker_finalize_task per task
-- (and tasker_append_step_transition per ready step). Same locks (each
-- task's row, in uuid order, then the steps it enqueues, skipping any locked),
-- same readiness rule, same limit per task (see below for steps held by
-- someone else), same finalization and history
-- as migrations 002 and 008; the answer is unchanged: one row per existing
-- task, in uuid order, with its ready steps in position order.

CREATE OR REPLACE FUNCTION tasker_advance_tasks(p_tasks uuid[], p_limit integer, p_async_commit boolean)
RETURNS TABLE (task_uuid uuid, status_before text, status text, namespace text, correlation_id uuid,
               ready uuid[])
LANGUAGE plpgsql AS $$
DECLARE
  v_sync text := current_setting('synchronous_commit');
  v_tasks uuid[];
  v_before text[];
  v_active uuid[];
  v_ready uuid[];
  v_ready_task uuid[];
  v_ready_from text[];
  v_ended boolean := false;
  r record;
BEGIN
  IF p_async_commit THEN
    PERFORM set_config('synchronous_commit', 'off', true);
  END IF;
  WITH locked AS MATERIALIZED (
    SELECT t.task_uuid, t.status FROM tasker_tasks t
     WHERE t.task_uuid = ANY (p_tasks) ORDER BY t.task_uuid FOR UPDATE
  )
  SELECT coalesce(array_agg(l.task_uuid ORDER BY l.task_uuid), '{}'),
         coalesce(array_agg(l.status ORDER BY l.task_uuid), '{}'),
         coalesce(array_agg(l.task_uuid ORDER BY l.task_uuid) FILTER (WHERE l.status = 'in_progress'), '{}')
    INTO v_tasks, v_before, v_active
    FROM locked l;

  -- Steps whose dependencies are all complete (or resolved manually), and
  -- steps whose retry backoff has elapsed; at most p_limit per task, in
  -- position order (no limit when p_limit is NULL). Then only those are
  -- locked: with the task's row locked, no other advance changes them
  -- meanwhile, and their state is checked again under the lock. One that
  -- someone else holds is skipped, not replaced by the next ready step;
  -- whoever holds it advances the task afterwards.
  WITH ready AS (
    SELECT s.step_uuid, row_number() OVER (PARTITION BY s.task_uuid ORDER BY s.position) AS n
      FROM tasker_workflow_steps s
     WHERE s.task_uuid = ANY (v_active)
       AND ((s.status = 'pending'
             AND NOT EXISTS (
               SELECT 1
                 FROM tasker_workflow_step_edges e
                 JOIN tasker_workflow_steps p ON p.step_uuid = e.from_step_uuid
                WHERE e.to_step_uuid = s.step_uuid
                  AND p.status NOT IN ('complete', 'resolved_manually')))
         OR (s.status = 'waiting_for_retry' AND s.retry_at <= clock_timestamp()))
  ), locked AS MATERIALIZED (
    SELECT s.step_uuid, s.task_uuid, s.status, s.position
      FROM tasker_workflow_steps s
     WHERE s.step_uuid = ANY (ARRAY(SELECT k.step_uuid FROM ready k WHERE k.n <= coalesce(p_limit, 2147483647)))
     ORDER BY s.step_uuid
       FOR UPDATE SKIP LOCKED
  )
  SELECT coalesce(array_agg(l.step_uuid ORDER BY l.task_uuid, l.position), '{}'),
         coalesce(array_agg(l.task_uuid ORDER BY l.task_uuid, l.position), '{}'),
         coalesce(array_agg(l.status ORDER BY l.task_uuid, l.position), '{}')
    INTO v_ready, v_ready_task, v_ready_from
    FROM locked l WHERE l.status IN ('pending', 'waiting_for_retry');

  IF cardinality(v_ready) > 0 THEN
    UPDATE tasker_workflow_steps s
       SET status = 'enqueued', enqueued_at = clock_timestamp(), updated_at = clock_timestamp()
     WHERE s.step_uuid = ANY (v_ready);
    PERFORM tasker_append_step_transitions(v_ready, v_ready_from,
      array_fill('enqueued'::text, ARRAY[cardinality(v_ready)]), array_fill('{}'::jsonb, ARRAY[cardinality(v_ready)]));
  END IF;

  -- A task ends once nothing can move: complete when every step is
  -- complete or resolved manually; error when nothing is in flight and a
  -- step failed for good (its descendants stay pending, blocked).
  FOR r IN
    SELECT a.task_uuid,
           count(s.step_uuid) AS total,
           count(s.step_uuid) FILTER (WHERE s.status IN ('complete', 'resolved_manually')) AS done,
           count(s.step_uuid) FILTER (WHERE s.status IN ('enqueued', 'in_progress', 'waiting_for_retry')) AS active,
           coalesce(array_agg(s.name ORDER BY s.position) FILTER (WHERE s.status = 'error'), '{}') AS failed
      FROM unnest(v_active) AS a(task_uuid)
      LEFT JOIN tasker_workflow_steps s ON s.task_uuid = a.task_uuid
     GROUP BY a.task_uuid
     ORDER BY a.task_uuid
  LOOP
    IF r.done = r.total THEN
      PERFORM tasker_transition_task(r.task_uuid, ARRAY['in_progress'], 'complete', '{}');
      v_ended := true;
    ELSIF r.active = 0 AND cardinality(r.failed) > 0 THEN
      PERFORM tasker_transition_task(r.task_uuid, ARRAY['in_progress'], 'error',
        jsonb_build_object('failed_steps', to_jsonb(r.failed)));
      v_ended := true;
    END IF;
  END LOOP;
  IF v_ended THEN
    -- A task's end is answered to whoever waits on it: durable first.
    PERFORM set_config('synchronous_commit', v_sync, true);
  END IF;

  RETURN QUERY
    SELECT t.task_uuid, b.status_before, t.status, t.namespace, t.correlation_id,
           ARRAY(SELECT u.step_uuid FROM unnest(v_ready, v_ready_task) WITH ORDINALITY AS u(step_uuid, task_uuid, i)
                  WHERE u.task_uuid = t.task_uuid ORDER BY u.i)
      FROM unnest(v_tasks, v_before) AS b(task_uuid, status_before)
      JOIN tasker_tasks t ON t.task_uuid = b.task_uuid
     ORDER BY t.task_uuid;
END $$;
