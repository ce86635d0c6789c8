-- Slots handed over inside an outcome transaction, for queues outside
-- PostgreSQL (RabbitMQ). tasker_release_slot enqueues the waiter it hands a
-- slot to; with PGMQ its messages go into the queue in that transaction.
-- Otherwise someone must send them after commit: outside an outcome
-- transaction, an orchestrator (announced on tasker_task_created); inside
-- one, the worker that records it, with no orchestrator needed.
-- tasker_record_outcomes opens a collection before it gives slots back
-- (tasker_collect_handed: the transaction's setting
-- tasker.handed_steps, '{}'), tasker_release_slot appends the steps it
-- enqueued instead of announcing them, and tasker_handed_messages returns
-- their messages for the worker to send, as tasker_record_outcomes' own
-- 'unsent' rows, and empties the collection.
CREATE FUNCTION tasker_handed_messages()
RETURNS TABLE (kind text, step_uuid uuid, task_uuid uuid, state text, detail jsonb) LANGUAGE plpgsql AS $$
DECLARE
  v_steps uuid[] := nullif(current_setting('tasker.handed_steps', true), '')::uuid[];
BEGIN
  IF coalesce(cardinality(v_steps), 0) = 0 THEN
    RETURN;
  END IF;
  PERFORM set_config('tasker.handed_steps', '{}', true);
  RETURN QUERY SELECT 'unsent', NULL::uuid, NULL::uuid, NULL::text,
                      jsonb_build_object('queue', m.queue, 'message', m.message, 'delay_ms', m.delay_ms)
                 FROM tasker_dispatch_messages(v_steps, NULL, false) AS m;
END $$;
