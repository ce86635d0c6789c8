-- Creates a task of a registered template in one statement: the task (in
-- progress), its steps (root steps, with no dependencies, enqueued at once),
-- edges, the history each went through ('' -> pending -> in_progress for
-- the task; '' -> pending, and pending -> enqueued for a root step), and
-- the root steps' messages: inserted here when the queues are in this
-- database (p_send), so a caller's transaction (a Rails app's) creates the
-- task and its first messages together or not at all; otherwise announced
-- with NOTIFY, delivered only on commit, to an orchestrator that sends them.
-- Idempotent on p_identity_key: a second call returns the first task with
-- created = false. task_row is the task's row as to_jsonb gives it (a Ruby
-- caller builds its model from it: a row inserted by this statement is
-- not visible to a query around the call). p_traceparent (W3C) is stored
-- with the task: its steps' spans continue that trace.
--
-- SET: a caller's connection (ActiveRecord's) plans with PostgreSQL's
-- defaults, under which the step insert was planned anew on every call
-- once statistics existed, and a plan made while the tables were small
-- scanned every step to find the root steps' queues; every statement here
-- (and in the functions it calls) finds its rows by key, so the engine's
-- own settings are right whatever the statistics say (see db/mod.rs).
--
-- p_run_at (a delayed task), when in the future: the task is created
-- 'pending' with its steps and no message; tasker_release_due_tasks starts
-- it at run_at. p_timeout_seconds (else the template's timeout_seconds):
-- the task's deadline, counted from its start (deadline_at).
--
-- p_priority (else the template's `priority`, else 0): -5..5, higher runs
-- first; every message of the task's steps carries it. p_priority_aging_ms:
-- the sender's messaging.priority_aging_ms, for a caller whose connection
-- is not the engine's (ActiveRecord's): the queues' send functions read it
-- (see tasker_install_queue); the engine's connections set it for the
-- session.
CREATE FUNCTION tasker_create_task(p_namespace text, p_name text, p_version text, p_context jsonb,
                                   p_identity_key text, p_send boolean DEFAULT true,
                                   p_traceparent text DEFAULT NULL, p_run_at timestamptz DEFAULT NULL,
                                   p_timeout_seconds integer DEFAULT NULL, p_priority integer DEFAULT NULL,
                                   p_priority_aging_ms integer DEFAULT NULL)
RETURNS TABLE (task_uuid uuid, created boolean, task_row jsonb) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off AS $$
DECLARE
  v_template bigint;
  v_row jsonb;
  v_task uuid;
  v_correlation uuid := tasker_uuid_v7();
  v_ready uuid[];
  v_queues text[];
  v_messages jsonb[];
  v_batch jsonb[];
  v_queue text;
  v_delayed boolean := coalesce(p_run_at > clock_timestamp(), false);
  v_timeout integer;
  v_limit jsonb;
  v_slot text;
  v_held boolean := false;
  v_limited uuid[];
  v_priority integer;
  -- The task's start: its deadline counts from the moment its history says
  -- it started, not from a clock read a statement earlier.
  v_started timestamptz;
BEGIN
  SELECT t.template_id, coalesce(p_timeout_seconds, (t.definition ->> 'timeout_seconds')::integer),
         t.definition -> 'concurrency', coalesce(p_priority, (t.definition ->> 'priority')::integer, 0)
    INTO v_template, v_timeout, v_limit, v_priority
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
  IF v_timeout <= 0 THEN
    RAISE EXCEPTION 'the timeout_seconds of a %/%@% task must be at least 1, got %', p_namespace, p_name, p_version,
      v_timeout USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF v_priority NOT BETWEEN -5 AND 5 THEN
    RAISE EXCEPTION 'the priority of a %/%@% task must be between -5 and 5 (higher runs first), got % (%)',
      p_namespace, p_name, p_version, v_priority,
      CASE WHEN p_priority IS NOT NULL THEN 'given to create_task' ELSE 'the template''s priority' END
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_priority_aging_ms IS NOT NULL THEN
    PERFORM set_config('tasker.priority_aging_ms', p_priority_aging_ms::text, true);
  END IF;

  v_task := tasker_uuid_v7();
  v_started := clock_timestamp();
  -- The template's concurrency limit: the task starts holding a slot, or
  -- waits pending like a delayed task (with no run_at) until a task of its
  -- key ends and hands it the slot (tasker_release_slot). A delayed task
  -- takes its slot when it is due (tasker_release_due_tasks).
  IF v_limit IS NOT NULL AND NOT v_delayed THEN
    v_slot := tasker_task_slot(p_namespace, p_name, v_limit, coalesce(p_context, '{}'));
    v_held := tasker_take_slot(v_slot, (v_limit ->> 'max')::integer, v_task, v_task, v_priority) <> 'taken';
    v_delayed := v_held;
  END IF;
  INSERT INTO tasker_tasks (task_uuid, template_id, namespace, name, version, context, identity_key, correlation_id,
                            status, transitions, traceparent, run_at, timeout_seconds, deadline_at, concurrency_slot,
                            priority)
  VALUES (v_task, v_template, p_namespace, p_name, p_version, coalesce(p_context, '{}'), p_identity_key,
          v_correlation, CASE WHEN v_delayed THEN 'pending' ELSE 'in_progress' END, CASE WHEN v_delayed THEN 1 ELSE 2 END,
          p_traceparent, CASE WHEN NOT v_held THEN p_run_at END, v_timeout,
          CASE WHEN NOT v_delayed THEN v_started + make_interval(secs => v_timeout) END,
          CASE WHEN NOT v_held THEN v_slot END, v_priority)
  ON CONFLICT (identity_key) DO NOTHING
  RETURNING to_jsonb(tasker_tasks.*) INTO v_row;
  IF NOT FOUND THEN
    IF v_held THEN
      DELETE FROM tasker_concurrency_waiters WHERE holder = v_task;
    ELSIF v_slot IS NOT NULL THEN
      PERFORM tasker_release_slot(v_slot);
    END IF;
    RETURN QUERY SELECT t.task_uuid, false, to_jsonb(t.*) FROM tasker_tasks t WHERE t.identity_key = p_identity_key;
    RETURN;
  END IF;
  -- The task's history, its steps with theirs, and the edges, in one
  -- statement: each step is made from its named step, whose `dependencies`
  -- say whether it is a root (enqueued at once, unless the task is
  -- delayed) and which steps it waits for. A fan-out's children are not
  -- made here: their fan-out step's outcome makes them (tasker_fan_out).
  WITH defs AS MATERIALIZED (
    SELECT tasker_uuid_v7() AS step_uuid, ns.named_step_id, ns.name, ns.position, ns.max_attempts, ns.dependencies,
           cardinality(ns.dependencies) = 0 AND NOT v_delayed AND ns.concurrency IS NULL AND ns.rate_limit IS NULL
             AS is_root, n.queue_name,
           cardinality(ns.dependencies) = 0 AND NOT v_delayed
             AND (ns.concurrency IS NOT NULL OR ns.rate_limit IS NOT NULL) AS is_limited_root
      FROM tasker_named_steps ns
      JOIN tasker_namespaces n ON n.name = ns.namespace
     WHERE ns.template_id = v_template AND ns.active AND NOT coalesce(ns.fan_out ? 'child_of', false)
     ORDER BY ns.position
  ), steps AS (
    INSERT INTO tasker_workflow_steps (step_uuid, task_uuid, named_step_id, name, position, max_attempts, status,
                                       transitions, enqueued_at)
    SELECT d.step_uuid, v_task, d.named_step_id, d.name, d.position, d.max_attempts,
           CASE WHEN d.is_root THEN 'enqueued' ELSE 'pending' END,
           CASE WHEN d.is_root THEN 2 ELSE 1 END,
           CASE WHEN d.is_root THEN clock_timestamp() END
      FROM defs d
  ), history AS (
    INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state)
    SELECT d.step_uuid, h.sort_key, h.from_state, h.to_state
      FROM defs d
      CROSS JOIN LATERAL (VALUES (1, '', 'pending'), (2, 'pending', 'enqueued')) AS h(sort_key, from_state, to_state)
     WHERE h.sort_key = 1 OR d.is_root
  ), task_history AS (
    INSERT INTO tasker_task_transitions (task_uuid, sort_key, from_state, to_state, created_at)
    SELECT v_task, h.sort_key, h.from_state, h.to_state, v_started
      FROM (VALUES (1, '', 'pending'), (2, 'pending', 'in_progress')) AS h(sort_key, from_state, to_state)
     WHERE h.sort_key = 1 OR NOT v_delayed
  ), edges AS (
    INSERT INTO tasker_workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
    SELECT v_task, parent.step_uuid, child.step_uuid
      FROM defs child
      CROSS JOIN unnest(child.dependencies) AS dep(name)
      JOIN defs parent ON parent.name = dep.name
  )
  SELECT coalesce(array_agg(d.step_uuid ORDER BY d.position) FILTER (WHERE d.is_root), '{}'),
         coalesce(array_agg(d.queue_name ORDER BY d.position) FILTER (WHERE d.is_root), '{}'),
         coalesce(array_agg(jsonb_build_object('task_uuid', v_task, 'step_uuid', d.step_uuid,
                                               'correlation_id', v_correlation, 'priority', v_priority)
                              ORDER BY d.position)
                    FILTER (WHERE d.is_root), '{}'),
         coalesce(array_agg(d.step_uuid ORDER BY d.position) FILTER (WHERE d.is_limited_root), '{}')
    INTO v_ready, v_queues, v_messages, v_limited FROM defs d;

  -- The root steps' messages, as tasker_dispatch_messages would send them,
  -- from what this function already holds (calling it cost a quarter of a
  -- creation): usually all to one queue.
  IF p_send AND cardinality(v_ready) > 0 THEN
    IF v_queues[1] = ALL (v_queues) THEN
      EXECUTE format('SELECT pgmq.%I($1, NULL)', 'tasker_send_' || v_queues[1]) USING v_messages;
    ELSE
      FOR v_queue, v_batch IN
        SELECT u.q, array_agg(u.m ORDER BY u.i) FROM unnest(v_queues, v_messages) WITH ORDINALITY AS u(q, m, i)
         GROUP BY u.q ORDER BY u.q
      LOOP
        EXECUTE format('SELECT pgmq.%I($1, NULL)', 'tasker_send_' || v_queue) USING v_batch;
      END LOOP;
    END IF;
  ELSIF NOT p_send AND cardinality(v_ready) > 0 THEN
    PERFORM pg_notify('tasker_task_created', v_task::text);
  END IF;
  -- Root steps with a concurrency or rate limit: enqueued when they get a
  -- slot, visible when their token is due.
  IF cardinality(v_limited) > 0 THEN
    v_limited := tasker_limit_steps(v_limited);
    PERFORM tasker_enqueue_steps(v_limited, p_send);
    IF NOT p_send AND cardinality(v_limited) > 0 THEN
      PERFORM pg_notify('tasker_task_created', v_task::text);
    END IF;
  END IF;
  RETURN QUERY SELECT v_task, true, v_row;
END $$;
