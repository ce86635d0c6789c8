-- pending or waiting_for_retry -> enqueued for the given steps (the caller
-- holds their task's row: see tasker_record_outcomes), with their history,
-- then their messages (see tasker_dispatch_messages for p_send and what is
-- returned). A step no longer in one of those states is left alone.
CREATE FUNCTION tasker_enqueue_steps(p_steps uuid[], p_send boolean)
RETURNS TABLE (queue text, message jsonb, delay_ms bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_enqueued uuid[];
BEGIN
  IF coalesce(cardinality(p_steps), 0) = 0 THEN
    RETURN;
  END IF;
  WITH locked AS MATERIALIZED (
    SELECT s.step_uuid, s.status, s.transitions
      FROM tasker_workflow_steps s WHERE s.step_uuid = ANY (p_steps)
     ORDER BY s.step_uuid FOR UPDATE
  ), ready AS MATERIALIZED (
    SELECT l.* FROM locked l WHERE l.status IN ('pending', 'waiting_for_retry')
  ), moved AS (
    UPDATE tasker_workflow_steps s
       SET status = 'enqueued', transitions = s.transitions + 1,
           -- A pending step's retry_at is its rate limit's token time.
           retry_at = CASE WHEN r.status = 'pending' THEN s.retry_at END,
           enqueued_at = clock_timestamp(), updated_at = clock_timestamp()
      FROM ready r WHERE s.step_uuid = r.step_uuid
  ), history AS (
    INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state)
    SELECT r.step_uuid, r.transitions + 1, r.status, 'enqueued' FROM ready r
  )
  SELECT array_agg(u.s ORDER BY u.i) INTO v_enqueued
    FROM unnest(p_steps) WITH ORDINALITY AS u(s, i) WHERE u.s IN (SELECT r.step_uuid FROM ready r);
  RETURN QUERY SELECT * FROM tasker_dispatch_messages(v_enqueued, NULL, p_send);
END $$;
