-- The heartbeat finds each step by primary key too (see migration 009): its
-- `status = 'in_progress'` condition let the planner walk the in-flight
-- index, and one beat took a second in the bench while holding the row
-- locks a recording worker waited on. Same answer as in migration 004: the
-- number of steps still in progress at the attempt given, whose heartbeat
-- was refreshed. Steps are locked in uuid order.
CREATE OR REPLACE FUNCTION tasker_heartbeat_steps(p_steps uuid[], p_attempts integer[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  v_step uuid;
  v_attempt integer;
  v_status text;
  v_attempts integer;
  v_beats integer := 0;
BEGIN
  FOR v_step, v_attempt IN SELECT h.s, h.a FROM unnest(p_steps, p_attempts) AS h(s, a) ORDER BY h.s LOOP
    SELECT status, attempts INTO v_status, v_attempts FROM tasker_workflow_steps WHERE step_uuid = v_step FOR UPDATE;
    IF v_status = 'in_progress' AND v_attempts = v_attempt THEN
      UPDATE tasker_workflow_steps SET heartbeat_at = clock_timestamp() WHERE step_uuid = v_step;
      v_beats := v_beats + 1;
    END IF;
  END LOOP;
  RETURN v_beats;
END $$;
