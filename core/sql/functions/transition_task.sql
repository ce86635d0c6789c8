-- Moves a task from one of p_from to p_to and appends the transition.
-- Returns the state it left, or NULL when the task is not in one of p_from
-- (someone else moved it first). A task reaching its end wakes its waiters;
-- the notification carries its end state ('<task uuid> <state>').
CREATE FUNCTION tasker_transition_task(p_task uuid, p_from text[], p_to text, p_meta jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_from text;
  v_sort integer;
BEGIN
  SELECT status INTO v_from FROM tasker_tasks WHERE task_uuid = p_task FOR NO KEY UPDATE;
  IF v_from IS NULL OR NOT (v_from = ANY (p_from)) THEN
    RETURN NULL;
  END IF;
  UPDATE tasker_tasks
     SET status = p_to, transitions = transitions + 1, updated_at = clock_timestamp(),
         completed_at = CASE WHEN p_to IN ('complete', 'error', 'cancelled') THEN clock_timestamp() END
   WHERE task_uuid = p_task
  RETURNING transitions INTO v_sort;
  INSERT INTO tasker_task_transitions (task_uuid, sort_key, from_state, to_state, metadata)
  VALUES (p_task, v_sort, v_from, p_to, coalesce(p_meta, '{}'));
  IF p_to IN ('complete', 'error', 'cancelled') THEN
    PERFORM pg_notify('tasker_task_finished', p_task::text || ' ' || p_to);
  END IF;
  RETURN v_from;
END $$;
