-- Refreshes the heartbeat of the steps a worker runs; returns how many are
-- still in progress at the attempt given (the rest were taken over,
-- cancelled or resolved). Rows are found by primary key and locked in uuid
-- order.
CREATE FUNCTION tasker_heartbeat_steps(p_steps uuid[], p_attempts integer[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  v_beats integer;
BEGIN
  WITH locked AS MATERIALIZED (
    SELECT s.step_uuid, s.status, s.attempts
      FROM tasker_workflow_steps s WHERE s.step_uuid = ANY (p_steps)
     ORDER BY s.step_uuid FOR UPDATE
  ), alive AS (
    SELECT l.step_uuid FROM locked l JOIN unnest(p_steps, p_attempts) AS h(step_uuid, attempt)
        ON h.step_uuid = l.step_uuid
     WHERE l.status = 'in_progress' AND l.attempts = h.attempt
  ), beat AS (
    UPDATE tasker_workflow_steps s SET heartbeat_at = clock_timestamp()
      FROM alive a WHERE s.step_uuid = a.step_uuid
    RETURNING 1
  )
  SELECT count(*) INTO v_beats FROM beat;
  RETURN v_beats;
END $$;
