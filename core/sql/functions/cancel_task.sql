-- Cancels a task and every step not yet finished; nothing further is
-- enqueued. An outcome that arrives later is kept in the step's history and
-- changes nothing. Returns false when the task had already finished.
CREATE FUNCTION tasker_cancel_task(p_task uuid, p_reason text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF tasker_transition_task(p_task, ARRAY['pending', 'in_progress', 'error'], 'cancelled',
                            jsonb_build_object('reason', p_reason)) IS NULL THEN
    RETURN false;
  END IF;
  PERFORM tasker_cancel_unfinished_steps(p_task, jsonb_build_object('reason', p_reason));
  RETURN true;
END $$;
