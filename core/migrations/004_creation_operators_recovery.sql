-- Task creation as one SQL function, so a Rails app can create a task
-- inside its own transaction (the task and its first messages exist if and
-- only if the app's writes commit); operator actions; crash recovery.

-- UUIDv7 (time-ordered): 48 bits of Unix milliseconds, then random bits,
-- with the version nibble set to 7. PostgreSQL 15 has no built-in.
CREATE FUNCTION tasker_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

-- A step removed from a template when it is registered again stays (old
-- tasks point at it) but new tasks no longer get it.
ALTER TABLE tasker_named_steps ADD COLUMN active boolean NOT NULL DEFAULT true;

-- Sends the messages of the given steps to their task's namespace queue
-- (PGMQ lives in this database, so the send joins the transaction).
CREATE FUNCTION tasker_send_step_messages(p_task uuid, p_steps uuid[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_queue text;
  v_correlation uuid;
BEGIN
  IF cardinality(p_steps) = 0 THEN
    RETURN;
  END IF;
  SELECT n.queue_name, t.correlation_id INTO v_queue, v_correlation
    FROM tasker_tasks t JOIN tasker_namespaces n ON n.name = t.namespace
   WHERE t.task_uuid = p_task;
  PERFORM pgmq.send_batch(v_queue, array_agg(jsonb_build_object(
            'task_uuid', p_task, 'step_uuid', s, 'correlation_id', v_correlation) ORDER BY ord))
     FROM unnest(p_steps) WITH ORDINALITY AS u(s, ord);
END $$;

-- Creates a task of a registered template: task, steps, edges, initial
-- transitions, and (p_send) the messages of its first steps. Idempotent on
-- p_identity_key: a second call returns the first task with created=false.
CREATE FUNCTION tasker_create_task(p_namespace text, p_name text, p_version text, p_context jsonb,
                                   p_identity_key text, p_send boolean DEFAULT true)
RETURNS TABLE (task_uuid uuid, created boolean) LANGUAGE plpgsql AS $$
DECLARE
  v_template bigint;
  v_definition jsonb;
  v_task uuid;
  v_ready uuid[];
BEGIN
  SELECT t.template_id, t.definition INTO v_template, v_definition
    FROM tasker_task_templates t
   WHERE t.namespace = p_namespace AND t.name = p_name AND t.version = p_version;
  IF v_template IS NULL THEN
    RAISE EXCEPTION 'no task template %/%@% is registered (register_templates! loads template_paths)',
      p_namespace, p_name, p_version USING ERRCODE = 'no_data_found';
  END IF;
  IF jsonb_typeof(coalesce(p_context, '{}')) <> 'object' THEN
    RAISE EXCEPTION 'the context of a %/%@% task must be an object, got %', p_namespace, p_name, p_version,
      p_context USING ERRCODE = 'invalid_parameter_value';
  END IF;

  v_task := tasker_uuid_v7();
  INSERT INTO tasker_tasks (task_uuid, template_id, namespace, name, version, context, identity_key, correlation_id)
  VALUES (v_task, v_template, p_namespace, p_name, p_version, coalesce(p_context, '{}'), p_identity_key,
          tasker_uuid_v7())
  ON CONFLICT (identity_key) DO NOTHING;
  IF NOT FOUND THEN
    RETURN QUERY SELECT t.task_uuid, false FROM tasker_tasks t WHERE t.identity_key = p_identity_key;
    RETURN;
  END IF;

  INSERT INTO tasker_workflow_steps (step_uuid, task_uuid, named_step_id, name, position, max_attempts)
  SELECT tasker_uuid_v7(), v_task, ns.named_step_id, ns.name, ns.position, ns.max_attempts
    FROM tasker_named_steps ns
   WHERE ns.template_id = v_template AND ns.active
   ORDER BY ns.position;

  INSERT INTO tasker_workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
  SELECT v_task, parent.step_uuid, child.step_uuid
    FROM jsonb_array_elements(v_definition -> 'steps') AS def(step)
    CROSS JOIN LATERAL jsonb_array_elements_text(coalesce(def.step -> 'dependencies', '[]')) AS dep(name)
    JOIN tasker_workflow_steps child ON child.task_uuid = v_task AND child.name = def.step ->> 'name'
    JOIN tasker_workflow_steps parent ON parent.task_uuid = v_task AND parent.name = dep.name;

  INSERT INTO tasker_workflow_step_transitions (step_uuid, from_state, to_state, sort_key, most_recent)
  SELECT s.step_uuid, '', 'pending', 1, true FROM tasker_workflow_steps s WHERE s.task_uuid = v_task;
  INSERT INTO tasker_task_transitions (task_uuid, from_state, to_state, sort_key, most_recent)
  VALUES (v_task, '', 'pending', 1, true);
  PERFORM tasker_transition_task(v_task, ARRAY['pending'], 'in_progress', '{}');

  SELECT coalesce(array_agg(r.ready_step_uuid), '{}') INTO v_ready
    FROM tasker_enqueue_ready_steps(v_task, 2147483647) AS r;
  IF p_send THEN
    PERFORM tasker_send_step_messages(v_task, v_ready);
  END IF;
  RETURN QUERY SELECT v_task, true;
END $$;

-- ---- operator actions ------------------------------------------------------

-- Cancels a task and every step not yet finished; nothing further is
-- enqueued. A result that arrives later is recorded on the step's history
-- but changes nothing. Returns false when the task was already finished.
CREATE FUNCTION tasker_cancel_task(p_task uuid, p_reason text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  IF tasker_transition_task(p_task, ARRAY['pending', 'in_progress', 'error'], 'cancelled',
                            jsonb_build_object('reason', p_reason)) IS NULL THEN
    RETURN false;
  END IF;
  FOR r IN SELECT step_uuid FROM tasker_workflow_steps
            WHERE task_uuid = p_task
              AND status IN ('pending', 'enqueued', 'in_progress', 'waiting_for_retry', 'error')
            ORDER BY position FOR UPDATE
  LOOP
    PERFORM tasker_transition_step(r.step_uuid,
      ARRAY['pending', 'enqueued', 'in_progress', 'waiting_for_retry', 'error'], 'cancelled',
      jsonb_build_object('reason', p_reason));
  END LOOP;
  RETURN true;
END $$;

-- error -> pending with a fresh set of attempts, and the task back in
-- progress; the caller then advances the task. False when the step is not
-- in error.
CREATE FUNCTION tasker_retry_step(p_step uuid, p_reason text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
BEGIN
  SELECT task_uuid INTO v_task FROM tasker_workflow_steps WHERE step_uuid = p_step;
  IF v_task IS NULL THEN
    RETURN false;
  END IF;
  PERFORM 1 FROM tasker_tasks WHERE task_uuid = v_task FOR UPDATE;
  IF tasker_transition_step(p_step, ARRAY['error'], 'pending',
                            jsonb_build_object('retried_by_operator', p_reason)) IS NULL THEN
    RETURN false;
  END IF;
  UPDATE tasker_workflow_steps SET attempts = 0, retry_at = NULL WHERE step_uuid = p_step;
  PERFORM tasker_transition_task(v_task, ARRAY['error'], 'in_progress',
                                 jsonb_build_object('retried_step', p_step));
  RETURN true;
END $$;

-- Marks a step done by hand with the given result, so its dependents can
-- run; resumes a task that stopped in error.
CREATE FUNCTION tasker_resolve_step_manually(p_step uuid, p_results jsonb, p_reason text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_task uuid;
BEGIN
  SELECT task_uuid INTO v_task FROM tasker_workflow_steps WHERE step_uuid = p_step;
  IF v_task IS NULL THEN
    RETURN false;
  END IF;
  PERFORM 1 FROM tasker_tasks WHERE task_uuid = v_task FOR UPDATE;
  IF tasker_transition_step(p_step, ARRAY['pending', 'enqueued', 'in_progress', 'waiting_for_retry', 'error'],
                            'resolved_manually', jsonb_build_object('reason', p_reason)) IS NULL THEN
    RETURN false;
  END IF;
  UPDATE tasker_workflow_steps
     SET results = p_results, retry_at = NULL, completed_at = clock_timestamp()
   WHERE step_uuid = p_step;
  PERFORM tasker_transition_task(v_task, ARRAY['error'], 'in_progress',
                                 jsonb_build_object('resolved_step', p_step));
  RETURN true;
END $$;

-- A result that arrives for a step that is no longer in progress (the task
-- was cancelled, or the step resolved by hand) is kept in the step's
-- history and changes nothing else.
CREATE FUNCTION tasker_record_late_result(p_step uuid, p_results jsonb, p_meta jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_status text;
  v_sort integer;
BEGIN
  SELECT status INTO v_status FROM tasker_workflow_steps WHERE step_uuid = p_step FOR UPDATE;
  IF v_status IS NULL THEN
    RETURN;
  END IF;
  -- A self-transition keeps the state and records what arrived.
  UPDATE tasker_workflow_step_transitions SET most_recent = false
   WHERE step_uuid = p_step AND most_recent RETURNING sort_key INTO v_sort;
  INSERT INTO tasker_workflow_step_transitions (step_uuid, from_state, to_state, metadata, sort_key, most_recent)
  VALUES (p_step, v_status, v_status,
          coalesce(p_meta, '{}') || jsonb_build_object('late_result', p_results), coalesce(v_sort, 0) + 1, true);
END $$;
-- Self-transitions: a step keeps its state and the history records what
-- arrived late.
INSERT INTO tasker_step_allowed_transitions (from_state, to_state)
SELECT state, state FROM tasker_step_states;

-- ---- recovery -----------------------------------------------------------------

-- A worker that holds a step refreshes heartbeat_at while the handler runs
-- (and stops once the step's timeout passes). A claim whose heartbeat is
-- older than the visibility timeout is stale: its worker is gone.
ALTER TABLE tasker_workflow_steps ADD COLUMN heartbeat_at timestamptz;

CREATE FUNCTION tasker_heartbeat_steps(p_steps uuid[], p_attempts integer[])
RETURNS integer LANGUAGE sql AS $$
  WITH beat AS (
    UPDATE tasker_workflow_steps s SET heartbeat_at = clock_timestamp()
      FROM unnest(p_steps, p_attempts) AS h(step_uuid, attempt)
     WHERE s.step_uuid = h.step_uuid AND s.attempts = h.attempt AND s.status = 'in_progress'
    RETURNING 1)
  SELECT count(*)::integer FROM beat
$$;

-- A worker claims a step that is enqueued, or one in progress whose claim
-- went stale (its message came back because the worker never acked it, and
-- no heartbeat for p_stale_after). The stale attempt is recorded as
-- in_progress -> enqueued first.
DROP FUNCTION tasker_claim_step(uuid, text);
CREATE FUNCTION tasker_claim_step(p_step uuid, p_worker text, p_stale_after interval)
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

-- Outcomes are fenced by attempt: a worker whose claim went stale and was
-- taken over cannot overwrite the attempt that replaced it. Such an outcome
-- is kept in the step's history as a late result instead.
DROP FUNCTION tasker_complete_step(uuid, jsonb, jsonb);
CREATE FUNCTION tasker_complete_step(p_step uuid, p_attempt integer, p_results jsonb, p_meta jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  UPDATE tasker_workflow_steps
     SET status = 'complete', results = p_results, retry_at = NULL,
         completed_at = clock_timestamp(), updated_at = clock_timestamp()
   WHERE step_uuid = p_step AND status = 'in_progress' AND attempts = p_attempt;
  IF NOT FOUND THEN
    PERFORM tasker_record_late_result(p_step, p_results, p_meta || jsonb_build_object('attempt', p_attempt));
    RETURN false;
  END IF;
  PERFORM tasker_append_step_transition(p_step, 'in_progress', 'complete', p_meta);
  RETURN true;
END $$;

DROP FUNCTION tasker_fail_step(uuid, jsonb, boolean, timestamptz);
CREATE FUNCTION tasker_fail_step(p_step uuid, p_attempt integer, p_error jsonb, p_retryable boolean,
                                 p_retry_at timestamptz)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_max integer;
  v_to text;
BEGIN
  SELECT max_attempts INTO v_max FROM tasker_workflow_steps
   WHERE step_uuid = p_step AND status = 'in_progress' AND attempts = p_attempt FOR UPDATE;
  IF NOT FOUND THEN
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

-- Steps whose work is not done and whose message may be gone: in progress
-- with a stale claim (no heartbeat for p_stale_after: the worker died), or
-- enqueued for longer than p_enqueued_after (a message lost outside
-- PostgreSQL). They are (again) enqueued and returned, so their messages
-- are sent again; the claim's compare-and-swap makes a duplicate harmless.
CREATE FUNCTION tasker_recover_stuck_steps(p_stale_after interval, p_enqueued_after interval, p_limit integer)
RETURNS TABLE (task_uuid uuid, step_uuid uuid, was text) LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT s.task_uuid, s.step_uuid, s.status
      FROM tasker_workflow_steps s
      JOIN tasker_tasks t ON t.task_uuid = s.task_uuid AND t.status = 'in_progress'
     WHERE (s.status = 'in_progress'
            AND coalesce(s.heartbeat_at, s.started_at) < clock_timestamp() - p_stale_after)
        OR (s.status = 'enqueued' AND s.enqueued_at < clock_timestamp() - p_enqueued_after)
     ORDER BY s.updated_at
     LIMIT p_limit
     FOR UPDATE OF s SKIP LOCKED
  LOOP
    UPDATE tasker_workflow_steps SET status = 'enqueued', enqueued_at = clock_timestamp(),
           updated_at = clock_timestamp() WHERE tasker_workflow_steps.step_uuid = r.step_uuid;
    IF r.status = 'in_progress' THEN
      PERFORM tasker_append_step_transition(r.step_uuid, 'in_progress', 'enqueued',
        jsonb_build_object('recovered', 'no heartbeat from its worker: the worker is gone'));
    END IF;
    task_uuid := r.task_uuid;
    step_uuid := r.step_uuid;
    was := r.status;
    RETURN NEXT;
  END LOOP;
END $$;
CREATE INDEX tasker_workflow_steps_in_flight_idx ON tasker_workflow_steps (updated_at)
  WHERE status IN ('enqueued', 'in_progress');
