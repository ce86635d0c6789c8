-- For queues outside PostgreSQL (RabbitMQ), a new task's first messages
-- cannot be sent inside the creating transaction. The function announces
-- the task instead; the announcement reaches orchestrators only if the
-- transaction commits, and they send the messages. The sweep's
-- stuck-enqueued pass covers an announcement nobody heard.

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
  ELSIF cardinality(v_ready) > 0 THEN
    -- Queues outside PostgreSQL: an orchestrator sends these messages once
    -- this transaction commits (NOTIFY is delivered only on commit).
    PERFORM pg_notify('tasker_task_created', v_task::text);
  END IF;
  RETURN QUERY SELECT v_task, true;
END $$;

