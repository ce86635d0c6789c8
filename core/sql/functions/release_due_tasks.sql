-- Starts delayed tasks whose run_at has come (at most p_limit, earliest
-- first; a task another orchestrator holds is left to it): pending ->
-- in_progress (the history's metadata says run_at), its deadline starts
-- counting, and its root steps are enqueued with their messages (see
-- tasker_dispatch_messages for p_send and what is returned). A delayed task
-- cancelled before its time is no longer pending and is not started.
CREATE FUNCTION tasker_release_due_tasks(p_limit integer, p_send boolean)
RETURNS TABLE (queue text, message jsonb, delay_ms bigint) LANGUAGE plpgsql AS $$
DECLARE
  r record;
  v_started uuid[] := '{}';
  v_roots uuid[];
  v_slot text;
BEGIN
  FOR r IN SELECT t.task_uuid, t.run_at, t.namespace, t.name, t.context, t.priority,
                  (SELECT tt.definition -> 'concurrency' FROM tasker_task_templates tt
                    WHERE tt.template_id = t.template_id) AS concurrency
             FROM tasker_tasks t
            WHERE t.status = 'pending' AND t.run_at <= clock_timestamp()
            ORDER BY t.run_at LIMIT p_limit FOR NO KEY UPDATE OF t SKIP LOCKED
  LOOP
    -- A template with a concurrency limit: the task takes its slot, or
    -- waits for one (run_at cleared: its turn comes when a slot is handed
    -- to it, see tasker_release_slot).
    IF r.concurrency IS NOT NULL THEN
      v_slot := tasker_task_slot(r.namespace, r.name, r.concurrency, r.context);
      IF tasker_take_slot(v_slot, (r.concurrency ->> 'max')::integer, r.task_uuid, r.task_uuid, r.priority) <> 'taken' THEN
        UPDATE tasker_tasks SET run_at = NULL WHERE task_uuid = r.task_uuid;
        CONTINUE;
      END IF;
      UPDATE tasker_tasks SET concurrency_slot = v_slot WHERE task_uuid = r.task_uuid;
    END IF;
    IF tasker_transition_task(r.task_uuid, ARRAY['pending'], 'in_progress',
                              jsonb_build_object('reason', 'run_at', 'run_at', r.run_at)) IS NOT NULL THEN
      v_started := v_started || r.task_uuid;
    END IF;
  END LOOP;
  IF cardinality(v_started) = 0 THEN
    RETURN;
  END IF;
  UPDATE tasker_tasks t SET deadline_at = clock_timestamp() + make_interval(secs => t.timeout_seconds)
   WHERE t.task_uuid = ANY (v_started) AND t.timeout_seconds IS NOT NULL;
  SELECT array_agg(s.step_uuid ORDER BY s.task_uuid, s.position) INTO v_roots
    FROM tasker_workflow_steps s
   WHERE s.task_uuid = ANY (v_started)
     AND NOT EXISTS (SELECT 1 FROM tasker_workflow_step_edges e WHERE e.to_step_uuid = s.step_uuid);
  RETURN QUERY SELECT * FROM tasker_enqueue_steps(tasker_limit_steps(v_roots), p_send);
END $$;
