-- Moves a step from one of p_from to p_to and appends the transition (a
-- self-transition, p_to = its state, only records p_meta); a step that
-- ends gives back its concurrency slot (tasker_give_back_slots). Returns the
-- state it left, or NULL when the step is not in one of p_from. For the
-- cold paths (operator actions, recovery); the hot ones (claims, outcomes,
-- enqueues) write the step and its history in one statement each.
CREATE FUNCTION tasker_transition_step(p_step uuid, p_from text[], p_to text, p_meta jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_from text;
  v_sort integer;
  v_slot text;
BEGIN
  SELECT status, concurrency_slot INTO v_from, v_slot FROM tasker_workflow_steps WHERE step_uuid = p_step FOR UPDATE;
  IF v_from IS NULL OR NOT (v_from = ANY (p_from)) THEN
    RETURN NULL;
  END IF;
  UPDATE tasker_workflow_steps
     SET status = p_to, transitions = transitions + 1, updated_at = clock_timestamp()
   WHERE step_uuid = p_step
  RETURNING transitions INTO v_sort;
  INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state, metadata)
  VALUES (p_step, v_sort, v_from, p_to, coalesce(p_meta, '{}'));
  IF v_slot IS NOT NULL AND p_to IN ('complete', 'error', 'cancelled', 'resolved_manually', 'skipped') THEN
    PERFORM tasker_give_back_slots(ARRAY[p_step]);
  END IF;
  RETURN v_from;
END $$;
