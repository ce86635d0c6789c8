-- A step's claim and outcome find the step by primary key alone.
--
-- They used to say `WHERE step_uuid = $1 AND status = 'in_progress'`. That
-- condition also matches the partial index tasker_workflow_steps_in_flight_idx
-- (status IN ('enqueued', 'in_progress')), and once ANALYZE has run at a
-- quiet moment (few steps in flight) the planner prefers that small-looking
-- index and walks every in-flight entry, live and dead, to find one step: the
-- cost of a claim grew with the number of steps in flight (0.2 -> 1.0 ms of
-- server time in the bench). Now each locks the row by primary key, checks
-- its state in plpgsql, and updates by primary key. Same compare-and-swap,
-- same transitions, same answers as migrations 004 and 007.

CREATE OR REPLACE FUNCTION tasker_claim_step(p_step uuid, p_worker text, p_stale_after interval)
RETURNS TABLE (task_uuid uuid, step_name text, handler_callable text, attempts integer,
               retryable boolean, max_attempts integer, backoff_base_ms integer,
               max_backoff_ms integer, timeout_seconds integer, task_row jsonb, step_row jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_status text;
  v_alive_at timestamptz;
  v_takeover boolean;
  v_task uuid;
  v_attempts integer;
  v_named bigint;
  v_step_row jsonb;
BEGIN
  SELECT s.status, coalesce(s.heartbeat_at, s.started_at) INTO v_status, v_alive_at
    FROM tasker_workflow_steps s WHERE s.step_uuid = p_step FOR UPDATE;
  -- A step in progress is taken over only when its claim went stale.
  v_takeover := v_status = 'in_progress' AND v_alive_at < clock_timestamp() - p_stale_after;
  IF NOT coalesce(v_takeover, false) AND v_status IS DISTINCT FROM 'enqueued' THEN
    RETURN;
  END IF;
  IF v_takeover THEN
    PERFORM tasker_append_step_transition(p_step, 'in_progress', 'enqueued',
      jsonb_build_object('recovered', 'claim went stale: its worker stopped without reporting'));
  END IF;
  UPDATE tasker_workflow_steps s
     SET status = 'in_progress', attempts = s.attempts + 1, started_at = clock_timestamp(),
         enqueued_at = CASE WHEN v_takeover THEN clock_timestamp() ELSE s.enqueued_at END,
         heartbeat_at = clock_timestamp(), updated_at = clock_timestamp()
   WHERE s.step_uuid = p_step
  RETURNING s.task_uuid, s.attempts, s.named_step_id, to_jsonb(s.*) INTO v_task, v_attempts, v_named, v_step_row;
  PERFORM tasker_append_step_transition(p_step, 'enqueued', 'in_progress',
    jsonb_build_object('worker', p_worker, 'attempt', v_attempts));
  RETURN QUERY
    SELECT v_task, ns.name, ns.handler_callable, v_attempts, ns.retryable, ns.max_attempts,
           ns.backoff_base_ms, ns.max_backoff_ms, ns.timeout_seconds, to_jsonb(t.*), v_step_row
      FROM tasker_named_steps ns, tasker_tasks t
     WHERE ns.named_step_id = v_named AND t.task_uuid = v_task;
END $$;

CREATE OR REPLACE FUNCTION tasker_complete_step(p_step uuid, p_attempt integer, p_results jsonb, p_meta jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_status text;
  v_attempts integer;
BEGIN
  SELECT status, attempts INTO v_status, v_attempts FROM tasker_workflow_steps WHERE step_uuid = p_step FOR UPDATE;
  IF v_status IS DISTINCT FROM 'in_progress' OR v_attempts IS DISTINCT FROM p_attempt THEN
    PERFORM tasker_record_late_result(p_step, p_results, p_meta || jsonb_build_object('attempt', p_attempt));
    RETURN false;
  END IF;
  UPDATE tasker_workflow_steps
     SET status = 'complete', results = p_results, retry_at = NULL,
         completed_at = clock_timestamp(), updated_at = clock_timestamp()
   WHERE step_uuid = p_step;
  PERFORM tasker_append_step_transition(p_step, 'in_progress', 'complete', p_meta);
  RETURN true;
END $$;

CREATE OR REPLACE FUNCTION tasker_fail_step(p_step uuid, p_attempt integer, p_error jsonb, p_retryable boolean,
                                            p_retry_at timestamptz)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_status text;
  v_attempts integer;
  v_max integer;
  v_to text;
BEGIN
  SELECT status, attempts, max_attempts INTO v_status, v_attempts, v_max
    FROM tasker_workflow_steps WHERE step_uuid = p_step FOR UPDATE;
  IF v_status IS DISTINCT FROM 'in_progress' OR v_attempts IS DISTINCT FROM p_attempt THEN
    PERFORM tasker_record_late_result(p_step, jsonb_build_object('error', p_error),
                                      jsonb_build_object('attempt', p_attempt));
    RETURN NULL;
  END IF;
  v_to := CASE WHEN p_retryable AND p_attempt < v_max THEN 'waiting_for_retry' ELSE 'error' END;
  UPDATE tasker_workflow_steps
     SET status = v_to, last_error = p_error,
         retry_at = CASE WHEN v_to = 'waiting_for_retry' THEN p_retry_at END,
         updated_at = clock_timestamp()
   WHERE step_uuid = p_step;
  PERFORM tasker_append_step_transition(p_step, 'in_progress', v_to,
    jsonb_build_object('attempt', p_attempt,
                       'error_class', p_error ->> 'class',
                       'error_message', p_error ->> 'message'));
  RETURN v_to;
END $$;
