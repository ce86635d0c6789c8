-- Aging for queues outside PostgreSQL (RabbitMQ), whose priorities are
-- strict: under a steady stream of higher-priority work a message of lower
-- priority would wait forever. The sweep's pass over a slice of the tasks
-- in progress (p_tasks, as for tasker_recover_stuck_steps) finds each step
-- whose message has waited in its queue for (5 - priority) aging steps
-- (p_aging_ms): enqueued since tasker_queued_since (a step waiting for its
-- rate limit's token: since the token came due), or a retry whose delayed
-- message came due at retry_at. Each gets one history row (a self-transition:
-- {"priority_raised": {"from": p, "to": 5}, "waited_ms": ...}) and a new
-- message at the top priority, returned for the caller to send; the first
-- message, when it comes, finds the step claimed and is dropped as a
-- duplicate. A step is raised once per wait (the history row says so),
-- so it costs at most one message more. That is PGMQ's bound: there a
-- message waits behind newer top-priority messages for at most
-- (5 - priority) aging steps too (see tasker_install_queue).
CREATE FUNCTION tasker_raise_priorities(p_tasks uuid[], p_aging_ms bigint, p_limit integer)
RETURNS TABLE (queue text, message jsonb, delay_ms bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  r record;
  v_now timestamptz := clock_timestamp();
BEGIN
  FOR r IN
    WITH tasks AS MATERIALIZED (
      SELECT t.task_uuid, t.priority, t.correlation_id FROM tasker_tasks t
       WHERE t.task_uuid = ANY (p_tasks) AND t.status = 'in_progress' AND t.priority < 5
    ), waiting AS MATERIALIZED (
      SELECT s.step_uuid, s.task_uuid, s.status, s.named_step_id, t.priority, t.correlation_id,
             CASE WHEN s.status = 'enqueued' THEN tasker_queued_since(s.enqueued_at, s.retry_at)
                  ELSE s.retry_at END AS since
        FROM tasks t JOIN tasker_workflow_steps s ON s.task_uuid = t.task_uuid
       WHERE s.status IN ('enqueued', 'waiting_for_retry')
    )
    SELECT w.*, n.queue_name
      FROM waiting w
      JOIN tasker_named_steps ns ON ns.named_step_id = w.named_step_id
      JOIN tasker_namespaces n ON n.name = ns.namespace
     WHERE w.since < v_now - make_interval(secs => (5 - w.priority) * p_aging_ms / 1000.0)
       AND NOT EXISTS (SELECT 1 FROM tasker_workflow_step_transitions h
                        WHERE h.step_uuid = w.step_uuid AND h.created_at >= w.since AND h.metadata ? 'priority_raised')
     ORDER BY w.since
     LIMIT p_limit
  LOOP
    CONTINUE WHEN tasker_transition_step(r.step_uuid, ARRAY[r.status], r.status, jsonb_build_object(
      'priority_raised', jsonb_build_object('from', r.priority, 'to', 5),
      'waited_ms', floor(extract(epoch FROM v_now - r.since) * 1000)::bigint)) IS NULL;
    queue := r.queue_name;
    message := jsonb_build_object('task_uuid', r.task_uuid, 'step_uuid', r.step_uuid,
                                  'correlation_id', r.correlation_id, 'priority', 5);
    delay_ms := 0;
    RETURN NEXT;
  END LOOP;
END $$;
