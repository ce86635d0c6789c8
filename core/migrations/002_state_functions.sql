-- State changes as SQL functions: each is one round trip, takes the row lock
-- it needs, compares the current state before changing it (compare-and-swap)
-- and appends the transition row in the same statement. Any process - the
-- Rust core, a Rails console, psql - changes state the same way.

CREATE FUNCTION tasker_append_step_transition(p_step uuid, p_from text, p_to text, p_meta jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_sort integer;
BEGIN
  UPDATE tasker_workflow_step_transitions SET most_recent = false
   WHERE step_uuid = p_step AND most_recent
  RETURNING sort_key INTO v_sort;
  INSERT INTO tasker_workflow_step_transitions (step_uuid, from_state, to_state, metadata, sort_key, most_recent)
  VALUES (p_step, coalesce(p_from, ''), p_to, coalesce(p_meta, '{}'), coalesce(v_sort, 0) + 1, true);
END $$;

CREATE FUNCTION tasker_append_task_transition(p_task uuid, p_from text, p_to text, p_meta jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_sort integer;
BEGIN
  UPDATE tasker_task_transitions SET most_recent = false
   WHERE task_uuid = p_task AND most_recent
  RETURNING sort_key INTO v_sort;
  INSERT INTO tasker_task_transitions (task_uuid, from_state, to_state, metadata, sort_key, most_recent)
  VALUES (p_task, coalesce(p_from, ''), p_to, coalesce(p_meta, '{}'), coalesce(v_sort, 0) + 1, true);
END $$;

-- Moves a task from one of p_from to p_to. Returns the state it left, or NULL
-- when the task is not in one of p_from (someone else moved it first).
CREATE FUNCTION tasker_transition_task(p_task uuid, p_from text[], p_to text, p_meta jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_from text;
BEGIN
  SELECT status INTO v_from FROM tasker_tasks WHERE task_uuid = p_task FOR UPDATE;
  IF v_from IS NULL OR NOT (v_from = ANY (p_from)) THEN
    RETURN NULL;
  END IF;
  UPDATE tasker_tasks
     SET status = p_to,
         updated_at = clock_timestamp(),
         completed_at = CASE WHEN p_to IN ('complete', 'error', 'cancelled') THEN clock_timestamp() END
   WHERE task_uuid = p_task;
  PERFORM tasker_append_task_transition(p_task, v_from, p_to, p_meta);
  IF p_to IN ('complete', 'error', 'cancelled') THEN
    PERFORM pg_notify('tasker_task_finished', p_task::text);
  END IF;
  RETURN v_from;
END $$;

CREATE FUNCTION tasker_transition_step(p_step uuid, p_from text[], p_to text, p_meta jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_from text;
BEGIN
  SELECT status INTO v_from FROM tasker_workflow_steps WHERE step_uuid = p_step FOR UPDATE;
  IF v_from IS NULL OR NOT (v_from = ANY (p_from)) THEN
    RETURN NULL;
  END IF;
  UPDATE tasker_workflow_steps SET status = p_to, updated_at = clock_timestamp() WHERE step_uuid = p_step;
  PERFORM tasker_append_step_transition(p_step, v_from, p_to, p_meta);
  RETURN v_from;
END $$;

-- Steps whose dependencies are all complete (or resolved manually), and
-- steps whose retry backoff has elapsed, move to 'enqueued'. Returns them.
-- The caller sends their messages in the same transaction where it can.
CREATE FUNCTION tasker_enqueue_ready_steps(p_task uuid, p_limit integer)
RETURNS TABLE (ready_step_uuid uuid) LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT s.step_uuid, s.status
      FROM tasker_workflow_steps s
     WHERE s.task_uuid = p_task
       AND ((s.status = 'pending'
             AND NOT EXISTS (
               SELECT 1
                 FROM tasker_workflow_step_edges e
                 JOIN tasker_workflow_steps p ON p.step_uuid = e.from_step_uuid
                WHERE e.to_step_uuid = s.step_uuid
                  AND p.status NOT IN ('complete', 'resolved_manually')))
         OR (s.status = 'waiting_for_retry' AND s.retry_at <= clock_timestamp()))
     ORDER BY s.position
     LIMIT p_limit
     FOR UPDATE OF s SKIP LOCKED
  LOOP
    UPDATE tasker_workflow_steps
       SET status = 'enqueued', enqueued_at = clock_timestamp(), updated_at = clock_timestamp()
     WHERE step_uuid = r.step_uuid;
    PERFORM tasker_append_step_transition(r.step_uuid, r.status, 'enqueued', '{}');
    ready_step_uuid := r.step_uuid;
    RETURN NEXT;
  END LOOP;
END $$;

-- enqueued -> in_progress for the worker that received the step's message.
-- Returns no row when the step is not enqueued (a duplicate delivery, or a
-- step already claimed, finished or cancelled): the caller acks and skips.
CREATE FUNCTION tasker_claim_step(p_step uuid, p_worker text)
RETURNS TABLE (task_uuid uuid, step_name text, handler_callable text, attempts integer,
               retryable boolean, max_attempts integer, backoff_base_ms integer,
               max_backoff_ms integer, timeout_seconds integer)
LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
  v_attempts integer;
  v_named bigint;
BEGIN
  UPDATE tasker_workflow_steps s
     SET status = 'in_progress', attempts = s.attempts + 1,
         started_at = clock_timestamp(), updated_at = clock_timestamp()
   WHERE s.step_uuid = p_step AND s.status = 'enqueued'
  RETURNING s.task_uuid, s.attempts, s.named_step_id INTO v_task, v_attempts, v_named;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM tasker_append_step_transition(p_step, 'enqueued', 'in_progress',
    jsonb_build_object('worker', p_worker, 'attempt', v_attempts));
  RETURN QUERY
    SELECT v_task, ns.name, ns.handler_callable, v_attempts, ns.retryable, ns.max_attempts,
           ns.backoff_base_ms, ns.max_backoff_ms, ns.timeout_seconds
      FROM tasker_named_steps ns WHERE ns.named_step_id = v_named;
END $$;

-- in_progress -> complete with the handler's result. False when the step is
-- no longer in progress (cancelled or resolved while it ran).
CREATE FUNCTION tasker_complete_step(p_step uuid, p_results jsonb, p_meta jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  UPDATE tasker_workflow_steps
     SET status = 'complete', results = p_results, retry_at = NULL,
         completed_at = clock_timestamp(), updated_at = clock_timestamp()
   WHERE step_uuid = p_step AND status = 'in_progress';
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM tasker_append_step_transition(p_step, 'in_progress', 'complete', p_meta);
  RETURN true;
END $$;

-- in_progress -> waiting_for_retry (retryable and attempts left) or error.
-- Returns the new state, or NULL when the step is no longer in progress.
CREATE FUNCTION tasker_fail_step(p_step uuid, p_error jsonb, p_retryable boolean, p_retry_at timestamptz)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_attempts integer;
  v_max integer;
  v_to text;
BEGIN
  SELECT attempts, max_attempts INTO v_attempts, v_max
    FROM tasker_workflow_steps WHERE step_uuid = p_step AND status = 'in_progress' FOR UPDATE;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  v_to := CASE WHEN p_retryable AND v_attempts < v_max THEN 'waiting_for_retry' ELSE 'error' END;
  UPDATE tasker_workflow_steps
     SET status = v_to, last_error = p_error,
         retry_at = CASE WHEN v_to = 'waiting_for_retry' THEN p_retry_at END,
         updated_at = clock_timestamp()
   WHERE step_uuid = p_step;
  PERFORM tasker_append_step_transition(p_step, 'in_progress', v_to,
    jsonb_build_object('attempt', v_attempts,
                       'error_class', p_error ->> 'class',
                       'error_message', p_error ->> 'message'));
  RETURN v_to;
END $$;

-- Decides a task's end once nothing can move: complete when every step is
-- complete or resolved manually; error when nothing is in flight and a step
-- failed for good (its descendants stay pending, blocked). Returns the
-- task's status afterwards.
CREATE FUNCTION tasker_finalize_task(p_task uuid)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_status text;
  v_total integer;
  v_done integer;
  v_active integer;
  v_failed text[];
BEGIN
  SELECT status INTO v_status FROM tasker_tasks WHERE task_uuid = p_task FOR UPDATE;
  IF v_status IS DISTINCT FROM 'in_progress' THEN
    RETURN v_status;
  END IF;
  SELECT count(*),
         count(*) FILTER (WHERE status IN ('complete', 'resolved_manually')),
         count(*) FILTER (WHERE status IN ('enqueued', 'in_progress', 'waiting_for_retry')),
         coalesce(array_agg(name ORDER BY position) FILTER (WHERE status = 'error'), '{}')
    INTO v_total, v_done, v_active, v_failed
    FROM tasker_workflow_steps WHERE task_uuid = p_task;
  IF v_done = v_total THEN
    PERFORM tasker_transition_task(p_task, ARRAY['in_progress'], 'complete', '{}');
    RETURN 'complete';
  ELSIF v_active = 0 AND cardinality(v_failed) > 0 THEN
    PERFORM tasker_transition_task(p_task, ARRAY['in_progress'], 'error',
      jsonb_build_object('failed_steps', to_jsonb(v_failed)));
    RETURN 'error';
  END IF;
  RETURN v_status;
END $$;

-- in_progress -> enqueued for a step a worker claimed but never started
-- (it is shutting down); the attempt it counted is given back.
CREATE FUNCTION tasker_release_step(p_step uuid, p_reason text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  UPDATE tasker_workflow_steps
     SET status = 'enqueued', attempts = attempts - 1, started_at = NULL, updated_at = clock_timestamp()
   WHERE step_uuid = p_step AND status = 'in_progress';
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM tasker_append_step_transition(p_step, 'in_progress', 'enqueued',
    jsonb_build_object('released', p_reason));
  RETURN true;
END $$;
