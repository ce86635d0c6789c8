-- Task creation with fewer writes: the same rows and history as migration
-- 005's, written once each. The task used to be inserted as pending and
-- then updated to in_progress, and every step inserted as pending, after
-- which a readiness pass updated the root steps to enqueued - each update a
-- new row version in every index, and creation cost more server time than
-- all four steps of a linear task together. Now the task is inserted
-- in_progress and the root steps (no dependencies) enqueued, with the
-- transitions each went through ('' -> pending -> in_progress, and
-- '' -> pending -> enqueued). The first messages go into the namespace's
-- PGMQ table directly (pgmq.send_batch builds and plans its SQL on every
-- call).

CREATE OR REPLACE FUNCTION tasker_send_step_messages(p_task uuid, p_steps uuid[])
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
  EXECUTE format('INSERT INTO pgmq.%I (vt, message) '
                 'SELECT clock_timestamp(), jsonb_build_object(''task_uuid'', $1, ''step_uuid'', s, '
                 '''correlation_id'', $2) FROM unnest($3) WITH ORDINALITY AS u(s, i) ORDER BY i',
                 'q_' || v_queue)
    USING p_task, v_correlation, p_steps;
END $$;

CREATE OR REPLACE FUNCTION tasker_create_task(p_namespace text, p_name text, p_version text, p_context jsonb,
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
  INSERT INTO tasker_tasks (task_uuid, template_id, namespace, name, version, context, identity_key, correlation_id,
                            status)
  VALUES (v_task, v_template, p_namespace, p_name, p_version, coalesce(p_context, '{}'), p_identity_key,
          tasker_uuid_v7(), 'in_progress')
  ON CONFLICT (identity_key) DO NOTHING;
  IF NOT FOUND THEN
    RETURN QUERY SELECT t.task_uuid, false FROM tasker_tasks t WHERE t.identity_key = p_identity_key;
    RETURN;
  END IF;
  INSERT INTO tasker_task_transitions (task_uuid, from_state, to_state, sort_key, most_recent)
  VALUES (v_task, '', 'pending', 1, false), (v_task, 'pending', 'in_progress', 2, true);

  -- Root steps (no dependencies) are ready at once.
  WITH steps AS (
    INSERT INTO tasker_workflow_steps (step_uuid, task_uuid, named_step_id, name, position, max_attempts, status,
                                       enqueued_at)
    SELECT tasker_uuid_v7(), v_task, ns.named_step_id, ns.name, ns.position, ns.max_attempts,
           CASE WHEN root.is_root THEN 'enqueued' ELSE 'pending' END,
           CASE WHEN root.is_root THEN clock_timestamp() END
      FROM tasker_named_steps ns
      CROSS JOIN LATERAL (
        SELECT coalesce(jsonb_array_length(def.step -> 'dependencies'), 0) = 0 AS is_root
          FROM jsonb_array_elements(v_definition -> 'steps') AS def(step)
         WHERE def.step ->> 'name' = ns.name) AS root
     WHERE ns.template_id = v_template AND ns.active
     ORDER BY ns.position
    RETURNING step_uuid, position, status
  ), transitions AS (
    INSERT INTO tasker_workflow_step_transitions (step_uuid, from_state, to_state, sort_key, most_recent)
    SELECT s.step_uuid, t.from_state, t.to_state, t.sort_key, t.most_recent
      FROM steps s
      CROSS JOIN LATERAL (VALUES ('', 'pending', 1, s.status = 'pending'),
                                 ('pending', 'enqueued', 2, true)) AS t(from_state, to_state, sort_key, most_recent)
     WHERE t.sort_key = 1 OR s.status = 'enqueued'
  )
  SELECT coalesce(array_agg(s.step_uuid ORDER BY s.position) FILTER (WHERE s.status = 'enqueued'), '{}')
    INTO v_ready FROM steps s;

  INSERT INTO tasker_workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
  SELECT v_task, parent.step_uuid, child.step_uuid
    FROM jsonb_array_elements(v_definition -> 'steps') AS def(step)
    CROSS JOIN LATERAL jsonb_array_elements_text(coalesce(def.step -> 'dependencies', '[]')) AS dep(name)
    JOIN tasker_workflow_steps child ON child.task_uuid = v_task AND child.name = def.step ->> 'name'
    JOIN tasker_workflow_steps parent ON parent.task_uuid = v_task AND parent.name = dep.name;

  IF p_send THEN
    PERFORM tasker_send_step_messages(v_task, v_ready);
  ELSIF cardinality(v_ready) > 0 THEN
    -- Queues outside PostgreSQL: an orchestrator sends these messages once
    -- this transaction commits (NOTIFY is delivered only on commit).
    PERFORM pg_notify('tasker_task_created', v_task::text);
  END IF;
  RETURN QUERY SELECT v_task, true;
END $$;
