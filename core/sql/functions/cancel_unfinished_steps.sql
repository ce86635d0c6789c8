-- Cancels every step of a task not yet finished (pending, enqueued, in
-- progress, waiting for a retry, or in error), in uuid order, each with
-- p_meta in its history: what cancelling a task and ending it at its
-- deadline both do once the task itself has moved. A handler still running
-- reports later; its outcome is kept in the step's history and changes
-- nothing.
CREATE FUNCTION tasker_cancel_unfinished_steps(p_task uuid, p_meta jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_step uuid;
BEGIN
  FOR v_step IN SELECT s.step_uuid FROM tasker_workflow_steps s
                 WHERE s.task_uuid = p_task
                   AND s.status IN ('pending', 'enqueued', 'in_progress', 'waiting_for_retry', 'error')
                 ORDER BY s.step_uuid FOR UPDATE
  LOOP
    PERFORM tasker_transition_step(v_step,
      ARRAY['pending', 'enqueued', 'in_progress', 'waiting_for_retry', 'error'], 'cancelled', p_meta);
  END LOOP;
END $$;
