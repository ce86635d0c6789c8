-- An outcome that arrives for a step no longer in that attempt (the task
-- was cancelled, the step resolved by hand, or its claim taken over) is
-- kept in the step's history as a self-transition and changes nothing else.
CREATE FUNCTION tasker_record_late_result(p_step uuid, p_outcome jsonb, p_meta jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_status text;
BEGIN
  SELECT status INTO v_status FROM tasker_workflow_steps WHERE step_uuid = p_step FOR UPDATE;
  IF v_status IS NOT NULL THEN
    PERFORM tasker_transition_step(p_step, ARRAY[v_status], v_status,
                                   coalesce(p_meta, '{}') || jsonb_build_object('late_result', p_outcome));
  END IF;
END $$;
