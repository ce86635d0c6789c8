-- The steps of p_steps (about to be enqueued) that may go now, in their
-- order: a step whose named step has a concurrency limit and that holds no
-- slot yet takes one (tasker_take_slot, slots locked in name order) or
-- stays pending, waiting for one; a waiting step's history says so once
-- (pending -> pending, {waiting_for: concurrency, slot, max}). A holder
-- ending hands its slot to the oldest waiter (tasker_release_slot). Steps
-- without a limit, and steps that already hold their slot (a retry),
-- pass. Callers on the hot path call it only when a ready step has a limit.
CREATE FUNCTION tasker_limit_steps(p_steps uuid[]) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
  r record;
  v_waiting uuid[] := '{}';
BEGIN
  FOR r IN
    SELECT s.step_uuid, s.task_uuid, (ns.concurrency ->> 'max')::integer AS max_slots,
           (ns.concurrency ->> 'scope') || '='
             || coalesce(t.context #>> ARRAY(SELECT jsonb_array_elements_text(ns.concurrency -> 'path')), '') AS slot
      FROM tasker_workflow_steps s
      JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
      JOIN tasker_tasks t ON t.task_uuid = s.task_uuid
     WHERE s.step_uuid = ANY (p_steps) AND ns.concurrency IS NOT NULL AND s.concurrency_slot IS NULL
       AND s.status = 'pending'
     ORDER BY 4, s.step_uuid
  LOOP
    CASE tasker_take_slot(r.slot, r.max_slots, r.step_uuid, r.task_uuid)
      WHEN 'taken' THEN
        UPDATE tasker_workflow_steps SET concurrency_slot = r.slot WHERE step_uuid = r.step_uuid;
      WHEN 'waiting' THEN
        PERFORM tasker_transition_step(r.step_uuid, ARRAY['pending'], 'pending',
          jsonb_build_object('waiting_for', 'concurrency', 'slot', r.slot, 'max', r.max_slots));
        v_waiting := v_waiting || r.step_uuid;
      ELSE
        v_waiting := v_waiting || r.step_uuid;
    END CASE;
  END LOOP;
  IF cardinality(v_waiting) = 0 THEN
    RETURN p_steps;
  END IF;
  RETURN ARRAY(SELECT u.s FROM unnest(p_steps) WITH ORDINALITY AS u(s, i) WHERE u.s <> ALL (v_waiting) ORDER BY u.i);
END $$;
