-- The steps of p_steps (about to be enqueued) that may go now, in their
-- order, after their named steps' limits:
--   concurrency: a step that holds no slot yet takes one (tasker_take_slot,
--     slots locked in name order) or stays pending, waiting for one (left
--     out); its history says so once (pending -> pending, {waiting_for:
--     concurrency, slot, max}). A holder ending hands its slot to the
--     next waiter, by priority then age (tasker_release_slot).
--   rate_limit: a step going now takes a token (tasker_take_token); when
--     its token is due later, the step goes all the same, with retry_at set
--     to that time, so its message becomes visible then (see
--     tasker_dispatch_messages); its history says {waiting_for: rate_limit,
--     bucket, until}.
-- Steps without a limit, and steps that already hold their slot and need
-- no token, pass. Callers on the hot path call it only when a ready step
-- has a limit.
CREATE FUNCTION tasker_limit_steps(p_steps uuid[]) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
  r record;
  v_waiting uuid[] := '{}';
  v_bucket text;
  v_at timestamptz;
BEGIN
  FOR r IN
    SELECT s.step_uuid, s.task_uuid, s.concurrency_slot IS NULL AND ns.concurrency IS NOT NULL AS needs_slot,
           (ns.concurrency ->> 'max')::integer AS max_slots,
           (ns.concurrency ->> 'scope') || '='
             || coalesce(t.context #>> ARRAY(SELECT jsonb_array_elements_text(ns.concurrency -> 'path')), '') AS slot,
           ns.rate_limit, t.context, t.priority
      FROM tasker_workflow_steps s
      JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
      JOIN tasker_tasks t ON t.task_uuid = s.task_uuid
     WHERE s.step_uuid = ANY (p_steps) AND s.status = 'pending'
       AND ((ns.concurrency IS NOT NULL AND s.concurrency_slot IS NULL) OR ns.rate_limit IS NOT NULL)
     ORDER BY 5, s.step_uuid
  LOOP
    IF r.needs_slot THEN
      CASE tasker_take_slot(r.slot, r.max_slots, r.step_uuid, r.task_uuid, r.priority)
        WHEN 'taken' THEN
          UPDATE tasker_workflow_steps SET concurrency_slot = r.slot WHERE step_uuid = r.step_uuid;
        WHEN 'waiting' THEN
          PERFORM tasker_transition_step(r.step_uuid, ARRAY['pending'], 'pending',
            jsonb_build_object('waiting_for', 'concurrency', 'slot', r.slot, 'max', r.max_slots));
          v_waiting := v_waiting || r.step_uuid;
          CONTINUE;
        ELSE
          v_waiting := v_waiting || r.step_uuid;
          CONTINUE;
      END CASE;
    END IF;
    IF r.rate_limit IS NOT NULL THEN
      v_bucket := (r.rate_limit ->> 'scope') || '='
        || coalesce(r.context #>> ARRAY(SELECT jsonb_array_elements_text(r.rate_limit -> 'path')), '');
      v_at := tasker_take_token(v_bucket, (r.rate_limit ->> 'per_second')::double precision,
                                (r.rate_limit ->> 'burst')::integer);
      IF v_at > clock_timestamp() THEN
        UPDATE tasker_workflow_steps SET retry_at = v_at WHERE step_uuid = r.step_uuid;
        PERFORM tasker_transition_step(r.step_uuid, ARRAY['pending'], 'pending',
          jsonb_build_object('waiting_for', 'rate_limit', 'bucket', v_bucket, 'until', v_at));
      END IF;
    END IF;
  END LOOP;
  IF cardinality(v_waiting) = 0 THEN
    RETURN p_steps;
  END IF;
  RETURN ARRAY(SELECT u.s FROM unnest(p_steps) WITH ORDINALITY AS u(s, i) WHERE u.s <> ALL (v_waiting) ORDER BY u.i);
END $$;
