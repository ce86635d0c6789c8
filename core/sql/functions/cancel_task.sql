-- Cancels a task and every step not yet finished; nothing further is
-- enqueued. An outcome that arrives later is kept in the step's history and
-- changes nothing. Returns false when the task had already finished.
CREATE FUNCTION tasker_cancel_task(p_task uuid, p_reason text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_step uuid;
BEGIN
  IF tasker_transition_task(p_task, ARRAY['pending', 'in_progress', 'error'], 'cancelled',
                            jsonb_build_object('reason', p_reason)) IS NULL THEN
    RETURN false;
  END IF;
  FOR v_step IN SELECT s.step_uuid FROM tasker_workflow_steps s
                 WHERE s.task_uuid = p_task
                   AND s.status IN ('pending', 'enqueued', 'in_progress', 'waiting_for_retry', 'error')
                 ORDER BY s.step_uuid FOR UPDATE
  LOOP
    PERFORM tasker_transition_step(v_step,
      ARRAY['pending', 'enqueued', 'in_progress', 'waiting_for_retry', 'error'], 'cancelled',
      jsonb_build_object('reason', p_reason));
  END LOOP;
  RETURN true;
END $$;
