-- Ends each task of p_tasks (the caller holds their rows) that is in
-- progress and can no longer move: complete when every step is complete,
-- resolved manually or skipped (a decision did not choose it); error when
-- nothing is in flight (enqueued, in progress, waiting for a retry) and a
-- step failed for good, naming the
-- failed steps (their descendants stay pending, blocked). Returns the tasks
-- that ended, with their end state, namespace and correlation id; their
-- waiters are notified. (Joining a caller's query to this function's rows
-- instead let the planner, which expects a thousand rows from a function,
-- walk the whole primary key of tasker_tasks for each call.)
-- Each test reads the task's steps through its (task_uuid, name) key and
-- stops at the first that answers it; a caller on the hot path calls this
-- only for tasks that may have ended (see tasker_record_outcomes).
CREATE FUNCTION tasker_finalize_tasks(p_tasks uuid[])
RETURNS TABLE (task_uuid uuid, status text, namespace text, correlation_id uuid) ROWS 1 LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_task uuid;
  v_failed text[];
  r record;
BEGIN
  FOR r IN
    -- By primary key first (see tasker_record_outcomes), then by status.
    WITH tasks AS MATERIALIZED (SELECT t.task_uuid, t.status, t.namespace, t.correlation_id
                                  FROM tasker_tasks t WHERE t.task_uuid = ANY (p_tasks))
    SELECT t.task_uuid, t.namespace, t.correlation_id FROM tasks t WHERE t.status = 'in_progress' ORDER BY t.task_uuid
  LOOP
    v_task := r.task_uuid;
    namespace := r.namespace;
    correlation_id := r.correlation_id;
    CONTINUE WHEN EXISTS (SELECT 1 FROM tasker_workflow_steps s
                           WHERE s.task_uuid = v_task AND s.status IN ('enqueued', 'in_progress', 'waiting_for_retry'));
    IF NOT EXISTS (SELECT 1 FROM tasker_workflow_steps s
                    WHERE s.task_uuid = v_task AND s.status NOT IN ('complete', 'resolved_manually', 'skipped')) THEN
      PERFORM tasker_transition_task(v_task, ARRAY['in_progress'], 'complete', '{}');
      task_uuid := v_task;
      status := 'complete';
      RETURN NEXT;
    ELSE
      v_failed := ARRAY(SELECT s.name FROM tasker_workflow_steps s
                         WHERE s.task_uuid = v_task AND s.status = 'error' ORDER BY s.position);
      IF cardinality(v_failed) > 0 THEN
        PERFORM tasker_transition_task(v_task, ARRAY['in_progress'], 'error',
                                       jsonb_build_object('failed_steps', to_jsonb(v_failed)));
        task_uuid := v_task;
        status := 'error';
        RETURN NEXT;
      END IF;
    END IF;
  END LOOP;
END $$;
