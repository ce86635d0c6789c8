-- error -> pending with a fresh set of attempts, and the task back in
-- progress; the caller then advances the task in the same transaction.
-- False when the step is not in error.
CREATE FUNCTION tasker_retry_step(p_step uuid, p_reason text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
BEGIN
  v_task := tasker_lock_task_of_step(p_step);
  IF v_task IS NULL THEN
    RETURN false;
  END IF;
  IF tasker_transition_step(p_step, ARRAY['error'], 'pending',
                            jsonb_build_object('retried_by_operator', p_reason)) IS NULL THEN
    RETURN false;
  END IF;
  UPDATE tasker_workflow_steps SET attempts = 0, retry_at = NULL WHERE step_uuid = p_step;
  PERFORM tasker_transition_task(v_task, ARRAY['error'], 'in_progress',
                                 jsonb_build_object('retried_step', p_step));
  RETURN true;
END $$;
