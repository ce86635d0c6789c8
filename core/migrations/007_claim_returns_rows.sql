-- A claim also returns the task's and the step's rows as the claim left
-- them, so a Ruby worker builds its ActiveRecord models from them instead
-- of reading both back (two round trips per step fewer). Otherwise the
-- same claim as in 004.
DROP FUNCTION tasker_claim_step(uuid, text, interval);
CREATE FUNCTION tasker_claim_step(p_step uuid, p_worker text, p_stale_after interval)
RETURNS TABLE (task_uuid uuid, step_name text, handler_callable text, attempts integer,
               retryable boolean, max_attempts integer, backoff_base_ms integer,
               max_backoff_ms integer, timeout_seconds integer, task_row jsonb, step_row jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
  v_attempts integer;
  v_named bigint;
  v_step_row jsonb;
BEGIN
  UPDATE tasker_workflow_steps s
     SET status = 'enqueued', enqueued_at = clock_timestamp(), updated_at = clock_timestamp()
   WHERE s.step_uuid = p_step AND s.status = 'in_progress'
     AND coalesce(s.heartbeat_at, s.started_at) < clock_timestamp() - p_stale_after;
  IF FOUND THEN
    PERFORM tasker_append_step_transition(p_step, 'in_progress', 'enqueued',
      jsonb_build_object('recovered', 'claim went stale: its worker stopped without reporting'));
  END IF;
  UPDATE tasker_workflow_steps s
     SET status = 'in_progress', attempts = s.attempts + 1, started_at = clock_timestamp(),
         heartbeat_at = clock_timestamp(), updated_at = clock_timestamp()
   WHERE s.step_uuid = p_step AND s.status = 'enqueued'
  RETURNING s.task_uuid, s.attempts, s.named_step_id, to_jsonb(s.*) INTO v_task, v_attempts, v_named, v_step_row;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM tasker_append_step_transition(p_step, 'enqueued', 'in_progress',
    jsonb_build_object('worker', p_worker, 'attempt', v_attempts));
  RETURN QUERY
    SELECT v_task, ns.name, ns.handler_callable, v_attempts, ns.retryable, ns.max_attempts,
           ns.backoff_base_ms, ns.max_backoff_ms, ns.timeout_seconds, to_jsonb(t.*), v_step_row
      FROM tasker_named_steps ns, tasker_tasks t
     WHERE ns.named_step_id = v_named AND t.task_uuid = v_task;
END $$;
