-- Moves tasks forward outside a worker's outcome: after an operator's retry
-- or resolution, and in the orchestrator's sweep. Each task's row is locked
-- (uuid order); its ready steps - every dependency complete, resolved
-- manually or skipped, or a retry whose time has come - are enqueued and
-- sent (see tasker_dispatch_messages for p_send); a task with nothing left
-- ends.
-- Returns one row per existing task: its status before and after, and the
-- messages left for the caller to send after commit.
-- p_async_commit: see tasker_claim_steps; a task reaching its end is
-- answered to whoever waits on it, so that commit is durable.
CREATE FUNCTION tasker_advance_tasks(p_tasks uuid[], p_async_commit boolean, p_send boolean)
RETURNS TABLE (task_uuid uuid, status_before text, status text, unsent jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_sync text := current_setting('synchronous_commit');
  v_tasks uuid[];
  v_before text[];
  v_ready uuid[];
  v_unsent jsonb;
  v_ended integer;
BEGIN
  IF p_async_commit THEN
    PERFORM set_config('synchronous_commit', 'off', true);
  END IF;
  WITH locked AS MATERIALIZED (
    SELECT t.task_uuid, t.status FROM tasker_tasks t
     WHERE t.task_uuid = ANY (p_tasks) ORDER BY t.task_uuid FOR NO KEY UPDATE
  )
  SELECT coalesce(array_agg(l.task_uuid ORDER BY l.task_uuid), '{}'),
         coalesce(array_agg(l.status ORDER BY l.task_uuid), '{}')
    INTO v_tasks, v_before
    FROM locked l;

  SELECT coalesce(array_agg(s.step_uuid ORDER BY s.task_uuid, s.position), '{}') INTO v_ready
    FROM tasker_workflow_steps s
   WHERE s.task_uuid = ANY (ARRAY(SELECT b.t FROM unnest(v_tasks, v_before) AS b(t, st) WHERE b.st = 'in_progress'))
     AND ((s.status = 'pending'
           AND NOT EXISTS (
             SELECT 1
               FROM tasker_workflow_step_edges e
               JOIN tasker_workflow_steps p ON p.step_uuid = e.from_step_uuid
              WHERE e.to_step_uuid = s.step_uuid
                AND p.status NOT IN ('complete', 'resolved_manually', 'skipped')))
       OR (s.status = 'waiting_for_retry' AND s.retry_at <= clock_timestamp()));

  v_ready := tasker_limit_steps(v_ready);
  SELECT coalesce(jsonb_agg(jsonb_build_object('queue', m.queue, 'message', m.message, 'delay_ms', m.delay_ms)), '[]')
    INTO v_unsent
    FROM tasker_enqueue_steps(v_ready, p_send) AS m;

  SELECT count(*) INTO v_ended FROM tasker_finalize_tasks(v_tasks);
  IF v_ended > 0 THEN
    PERFORM set_config('synchronous_commit', v_sync, true);
  END IF;

  RETURN QUERY
    SELECT t.task_uuid, b.status_before, t.status,
           coalesce((SELECT jsonb_agg(u.m) FROM jsonb_array_elements(v_unsent) AS u(m)
                      WHERE (u.m -> 'message' ->> 'task_uuid')::uuid = t.task_uuid), '[]')
      FROM unnest(v_tasks, v_before) AS b(task_uuid, status_before)
      JOIN tasker_tasks t ON t.task_uuid = b.task_uuid
     ORDER BY t.task_uuid;
END $$;
