-- Marks a step done by hand with the given result, so its dependents can
-- run, and resumes a task that stopped in error; the caller then advances
-- the task in the same transaction. False when the step had finished
-- (skipped included). A decision step's result must be a decision
-- ({"run": [names of its dependents]}), which is applied as a handler's.
CREATE FUNCTION tasker_resolve_step_manually(p_step uuid, p_results jsonb, p_reason text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
  v_problem text;
BEGIN
  v_task := tasker_lock_task_of_step(p_step);
  IF v_task IS NULL THEN
    RETURN false;
  END IF;
  IF (SELECT ns.decision AND s.status IN ('pending', 'enqueued', 'in_progress', 'waiting_for_retry', 'error')
        FROM tasker_workflow_steps s JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
       WHERE s.step_uuid = p_step) THEN
    v_problem := tasker_decision_problem(p_step, p_results);
    IF v_problem IS NOT NULL THEN
      RAISE EXCEPTION 'cannot resolve it by hand with that result: %', v_problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END IF;
  IF tasker_transition_step(p_step, ARRAY['pending', 'enqueued', 'in_progress', 'waiting_for_retry', 'error'],
                            'resolved_manually', jsonb_build_object('reason', p_reason)) IS NULL THEN
    RETURN false;
  END IF;
  UPDATE tasker_workflow_steps
     SET results = p_results, retry_at = NULL, completed_at = clock_timestamp()
   WHERE step_uuid = p_step;
  PERFORM tasker_apply_decisions(ARRAY[p_step]);
  PERFORM tasker_transition_task(v_task, ARRAY['error'], 'in_progress',
                                 jsonb_build_object('resolved_step', p_step));
  RETURN true;
END $$;
