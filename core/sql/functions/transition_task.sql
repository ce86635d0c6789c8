-- Moves a task from one of p_from to p_to and appends the transition.
-- Returns the state it left, or NULL when the task is not in one of p_from
-- (someone else moved it first). A task reaching its end gives back its
-- concurrency slot (tasker_release_slot) and wakes its waiters;
-- the notification carries its end state and, when it fits in a
-- notification, its row as to_jsonb gives it ('<task uuid> <state>
-- <row>'), so a waiter builds its model with no read.
CREATE FUNCTION tasker_transition_task(p_task uuid, p_from text[], p_to text, p_meta jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_from text;
  v_row text;
  v_slot text;
BEGIN
  SELECT status, concurrency_slot INTO v_from, v_slot FROM tasker_tasks WHERE task_uuid = p_task FOR NO KEY UPDATE;
  IF v_from IS NULL OR NOT (v_from = ANY (p_from)) THEN
    RETURN NULL;
  END IF;
  -- The row and its history in one statement.
  WITH moved AS (
    UPDATE tasker_tasks
       SET status = p_to, transitions = transitions + 1, updated_at = clock_timestamp(),
           completed_at = CASE WHEN p_to IN ('complete', 'error', 'cancelled') THEN clock_timestamp() END,
           concurrency_slot = CASE WHEN p_to IN ('complete', 'error', 'cancelled') THEN NULL ELSE concurrency_slot END
     WHERE task_uuid = p_task
    RETURNING transitions,
              CASE WHEN p_to IN ('complete', 'error', 'cancelled') THEN to_jsonb(tasker_tasks.*)::text END AS row_text
  ), history AS (
    INSERT INTO tasker_task_transitions (task_uuid, sort_key, from_state, to_state, metadata)
    SELECT p_task, m.transitions, v_from, p_to, coalesce(p_meta, '{}') FROM moved m
  )
  SELECT m.row_text INTO v_row FROM moved m;
  IF v_slot IS NOT NULL AND p_to IN ('complete', 'error', 'cancelled') THEN
    PERFORM tasker_release_slot(v_slot);
  END IF;
  IF p_to IN ('complete', 'error', 'cancelled') THEN
    -- A payload is at most 8,000 bytes; a larger row is read by the waiter.
    PERFORM pg_notify('tasker_task_finished',
                      p_task::text || ' ' || p_to || CASE WHEN octet_length(v_row) <= 7900 THEN ' ' || v_row ELSE '' END);
  END IF;
  RETURN v_from;
END $$;
