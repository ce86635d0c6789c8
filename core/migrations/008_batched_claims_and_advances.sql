-- Claims and advances in batches, one round trip and one commit for many
-- steps or tasks, and commits that need not wait for the disk where losing
-- them in a database crash only means work is done again.
--
-- Asynchronous commit (`synchronous_commit = off` for one transaction) is
-- asked for by the caller, and only when the queues live in this database:
-- then a commit lost in a crash takes with it everything that came after it
-- in the WAL (the messages it sent, the acks it made, any later claim or
-- result), so the engine's state stays whole and the lost work is redone -
-- a step's handler may run again, as after a worker crash (at-least-once).
-- What answers a caller stays synchronous: task creation, a worker's
-- recorded result, a task reaching its end, operator actions.

-- Claims each step of p_steps, in uuid order (two workers claiming
-- overlapping batches lock rows in one order). Returns a row per step
-- claimed; a step that is not enqueued has no row (the caller acks and
-- skips its message).
CREATE FUNCTION tasker_claim_steps(p_steps uuid[], p_worker text, p_stale_after interval, p_async_commit boolean)
RETURNS TABLE (step_uuid uuid, task_uuid uuid, step_name text, handler_callable text, attempts integer,
               retryable boolean, max_attempts integer, backoff_base_ms integer,
               max_backoff_ms integer, timeout_seconds integer, task_row jsonb, step_row jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  v_step uuid;
BEGIN
  IF p_async_commit THEN
    PERFORM set_config('synchronous_commit', 'off', true);
  END IF;
  FOR v_step IN SELECT DISTINCT s FROM unnest(p_steps) AS s ORDER BY s LOOP
    RETURN QUERY SELECT v_step, c.* FROM tasker_claim_step(v_step, p_worker, p_stale_after) AS c;
  END LOOP;
END $$;

-- Advances each task of p_tasks, in uuid order: ready steps become
-- 'enqueued' (at most p_limit per task) and the task is finalized if nothing
-- is left. Returns one row per existing task: its status before and after,
-- and the steps enqueued, whose messages the caller sends in the same
-- transaction where the provider allows.
CREATE FUNCTION tasker_advance_tasks(p_tasks uuid[], p_limit integer, p_async_commit boolean)
RETURNS TABLE (task_uuid uuid, status_before text, status text, namespace text, correlation_id uuid,
               ready uuid[])
LANGUAGE plpgsql AS $$
DECLARE
  v_sync text := current_setting('synchronous_commit');
  v_task uuid;
BEGIN
  IF p_async_commit THEN
    PERFORM set_config('synchronous_commit', 'off', true);
  END IF;
  FOR v_task IN SELECT DISTINCT t FROM unnest(p_tasks) AS t ORDER BY t LOOP
    SELECT t.status, t.namespace, t.correlation_id INTO status_before, namespace, correlation_id
      FROM tasker_tasks t WHERE t.task_uuid = v_task FOR UPDATE;
    CONTINUE WHEN NOT FOUND;
    task_uuid := v_task;
    status := status_before;
    ready := '{}';
    IF status_before = 'in_progress' THEN
      ready := ARRAY(SELECT r.ready_step_uuid FROM tasker_enqueue_ready_steps(v_task, p_limit) AS r);
      status := tasker_finalize_task(v_task);
      IF status <> status_before THEN
        -- The task's end is answered to whoever waits on it: durable first.
        PERFORM set_config('synchronous_commit', v_sync, true);
      END IF;
    END IF;
    RETURN NEXT;
  END LOOP;
END $$;
