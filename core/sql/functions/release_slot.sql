-- Gives back one place of slot p_slot (its holder ended: see
-- tasker_give_back_slots) and hands the free places to the next waiters
-- (highest priority, then oldest: see tasker_concurrency_waiters), with the slot's row locked, in the same transaction: a
-- waiting step is enqueued (its message sent), a waiting task starts. A
-- waiter that moved on meanwhile (cancelled, resolved, deleted) is dropped.
-- The messages go into PGMQ here when the step's queue is a PGMQ queue of
-- this database. Otherwise, inside an outcome transaction that collects
-- them (tasker_collect_handed), the steps are added to its collection and
-- the worker sends their messages after commit (tasker_handed_messages);
-- elsewhere the task is announced on tasker_task_created, whose listener
-- (an orchestrator) sends its enqueued steps' messages on commit. The
-- sweep resends what either misses.
CREATE FUNCTION tasker_release_slot(p_slot text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_free integer;
  v_waiter record;
  v_ready uuid[];
  v_in_db boolean;
BEGIN
  UPDATE tasker_concurrency_slots SET in_use = greatest(in_use - 1, 0), updated_at = clock_timestamp()
   WHERE slot = p_slot
  RETURNING max_slots - in_use INTO v_free;
  WHILE coalesce(v_free, 0) > 0 LOOP
    DELETE FROM tasker_concurrency_waiters c
     WHERE c.holder = (SELECT o.holder FROM tasker_concurrency_waiters o WHERE o.slot = p_slot
                        ORDER BY o.turn, o.holder LIMIT 1)
    RETURNING c.holder, c.task_uuid INTO v_waiter;
    EXIT WHEN NOT FOUND;
    IF v_waiter.holder = v_waiter.task_uuid THEN
      -- A task waiting to start.
      UPDATE tasker_tasks SET concurrency_slot = p_slot
       WHERE task_uuid = v_waiter.task_uuid AND status = 'pending' AND concurrency_slot IS NULL;
      CONTINUE WHEN NOT FOUND;
      PERFORM tasker_transition_task(v_waiter.task_uuid, ARRAY['pending'], 'in_progress',
                                     jsonb_build_object('reason', 'concurrency', 'slot', p_slot));
      UPDATE tasker_tasks t SET deadline_at = clock_timestamp() + make_interval(secs => t.timeout_seconds)
       WHERE t.task_uuid = v_waiter.task_uuid AND t.timeout_seconds IS NOT NULL;
      v_ready := ARRAY(SELECT s.step_uuid FROM tasker_workflow_steps s
                        WHERE s.task_uuid = v_waiter.task_uuid
                          AND NOT EXISTS (SELECT 1 FROM tasker_workflow_step_edges e WHERE e.to_step_uuid = s.step_uuid)
                        ORDER BY s.position);
    ELSE
      -- A ready step of a task in progress.
      UPDATE tasker_workflow_steps s SET concurrency_slot = p_slot
       WHERE s.step_uuid = v_waiter.holder AND s.status = 'pending' AND s.concurrency_slot IS NULL
         AND EXISTS (SELECT 1 FROM tasker_tasks t WHERE t.task_uuid = s.task_uuid AND t.status = 'in_progress');
      CONTINUE WHEN NOT FOUND;
      v_ready := ARRAY[v_waiter.holder];
    END IF;
    UPDATE tasker_concurrency_slots SET in_use = in_use + 1 WHERE slot = p_slot;
    v_free := v_free - 1;
    v_ready := tasker_limit_steps(v_ready);
    v_in_db := EXISTS (
      SELECT 1 FROM tasker_workflow_steps s
        JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
        JOIN tasker_namespaces n ON n.name = ns.namespace
        JOIN pg_proc p ON p.proname = 'tasker_send_' || n.queue_name
        JOIN pg_namespace pn ON pn.oid = p.pronamespace AND pn.nspname = 'pgmq'
       WHERE s.step_uuid = v_ready[1]);
    PERFORM tasker_enqueue_steps(v_ready, v_in_db);
    IF NOT v_in_db AND cardinality(v_ready) > 0 THEN
      IF coalesce(current_setting('tasker.handed_steps', true), '') <> '' THEN
        PERFORM set_config('tasker.handed_steps',
                           (current_setting('tasker.handed_steps')::uuid[] || v_ready)::text, true);
      ELSE
        PERFORM pg_notify('tasker_task_created', v_waiter.task_uuid::text);
      END IF;
    END IF;
  END LOOP;
END $$;
