-- Deletes up to p_limit tasks that finished (complete, error, cancelled)
-- before p_before, with their steps, edges and history; returns how many.
-- A task in flight is never touched: the status test is made on the row
-- locked here, and a task an operator is resuming at this moment is skipped
-- (SKIP LOCKED) and looked at again by the next batch. Callers run small
-- batches, each its own transaction, so no lock is held for long.
CREATE FUNCTION tasker_prune_finished_tasks(p_before timestamptz, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  v_tasks uuid[];
BEGIN
  SELECT coalesce(array_agg(t.task_uuid), '{}') INTO v_tasks
    FROM (SELECT t.task_uuid FROM tasker_tasks t
           WHERE t.completed_at < p_before AND t.status IN ('complete', 'error', 'cancelled')
           ORDER BY t.completed_at LIMIT p_limit FOR UPDATE SKIP LOCKED) t;
  IF cardinality(v_tasks) = 0 THEN
    RETURN 0;
  END IF;
  -- Their steps, edges and history go with them (tasker_delete_task_rows).
  DELETE FROM tasker_tasks t WHERE t.task_uuid = ANY (v_tasks);
  RETURN cardinality(v_tasks);
END $$;
