-- The messages of the given steps, each to its step's namespace queue,
-- carrying its task's priority (which orders the queue: see
-- tasker_install_queue) and visible after its delay (p_delays_ms, NULL
-- for none; an enqueued step whose rate-limit token is due later,
-- retry_at, waits until then). With p_send (the queues are PGMQ tables in
-- this database) they are inserted here, so they exist if and only if the
-- caller's transaction commits, and nothing is returned; otherwise they
-- are returned for the caller to send after commit.
CREATE FUNCTION tasker_dispatch_messages(p_steps uuid[], p_delays_ms bigint[], p_send boolean)
RETURNS TABLE (queue text, message jsonb, delay_ms bigint) LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  IF coalesce(cardinality(p_steps), 0) = 0 THEN
    RETURN;
  END IF;
  FOR r IN
    SELECT n.queue_name,
           array_agg(jsonb_build_object('task_uuid', s.task_uuid, 'step_uuid', s.step_uuid,
                                        'correlation_id', t.correlation_id, 'priority', t.priority)
                     ORDER BY u.i) AS messages,
           -- An enqueued step waiting for its rate limit's token: visible then.
           array_agg(coalesce(u.delay_ms,
                              CASE WHEN s.status = 'enqueued' AND s.retry_at > clock_timestamp()
                                   THEN ceil(extract(epoch FROM s.retry_at - clock_timestamp()) * 1000)::bigint END,
                              0) ORDER BY u.i) AS delays
      FROM unnest(p_steps, p_delays_ms) WITH ORDINALITY AS u(step_uuid, delay_ms, i)
      JOIN tasker_workflow_steps s ON s.step_uuid = u.step_uuid
      JOIN tasker_tasks t ON t.task_uuid = s.task_uuid
      JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
      JOIN tasker_namespaces n ON n.name = ns.namespace
     GROUP BY n.queue_name
     ORDER BY n.queue_name
  LOOP
    IF p_send THEN
      EXECUTE format('SELECT pgmq.%I($1, $2)', 'tasker_send_' || r.queue_name) USING r.messages, r.delays;
    ELSE
      RETURN QUERY SELECT r.queue_name, m.message, m.delay_ms
                     FROM unnest(r.messages, r.delays) AS m(message, delay_ms);
    END IF;
  END LOOP;
END $$;
