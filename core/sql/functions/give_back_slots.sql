-- Gives back the concurrency slots (tasker_release_slot) of those of
-- p_steps that hold one and have ended (complete, error, cancelled,
-- resolved by hand or skipped), in uuid order. Called by whatever ends a
-- step (record_outcomes, transition_step, apply_decisions) when a step it
-- ends may hold a slot; a status trigger did this before, and cost every
-- status update of every step about 7 us, limited or not.
CREATE FUNCTION tasker_give_back_slots(p_steps uuid[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT s.step_uuid, s.concurrency_slot FROM tasker_workflow_steps s
            WHERE s.step_uuid = ANY (p_steps) AND s.concurrency_slot IS NOT NULL
              AND s.status IN ('complete', 'error', 'cancelled', 'resolved_manually', 'skipped')
            ORDER BY s.step_uuid FOR UPDATE
  LOOP
    UPDATE tasker_workflow_steps SET concurrency_slot = NULL WHERE step_uuid = r.step_uuid;
    PERFORM tasker_release_slot(r.concurrency_slot);
  END LOOP;
END $$;
