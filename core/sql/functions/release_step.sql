-- in_progress -> enqueued for a step a worker claimed but never finished
-- (it is shutting down); the attempt it counted is given back. The caller
-- hands the step's message back, or sends one (an eagerly claimed step has
-- none): see tasker_dispatch_messages. False when the step is not in
-- progress at p_attempt.
CREATE FUNCTION tasker_release_step(p_step uuid, p_attempt integer, p_reason text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_attempts integer;
BEGIN
  SELECT attempts INTO v_attempts FROM tasker_workflow_steps WHERE step_uuid = p_step FOR UPDATE;
  IF v_attempts IS DISTINCT FROM p_attempt
     OR tasker_transition_step(p_step, ARRAY['in_progress'], 'enqueued',
                               jsonb_build_object('released', p_reason)) IS NULL THEN
    RETURN false;
  END IF;
  UPDATE tasker_workflow_steps
     SET attempts = attempts - 1, started_at = NULL, enqueued_at = clock_timestamp()
   WHERE step_uuid = p_step;
  RETURN true;
END $$;
