-- The sweep's recovery pass over the steps of p_tasks (a slice of the tasks
-- in progress: the caller walks them a slice per pass, so a pass costs the
-- same however many tasks are running): steps whose work is not done and
-- whose message may be gone. In progress with a stale claim (no heartbeat
-- for p_stale_after: the worker died) -> enqueued again; waiting for a
-- retry more than p_enqueued_after past its time (the delayed message was
-- lost outside PostgreSQL) -> enqueued; enqueued for longer than
-- p_enqueued_after (a message lost outside PostgreSQL) -> its message is
-- sent again. An enqueued step has waited since tasker_queued_since: one
-- waiting for its rate limit's token, only since the token came due (a
-- long wait for a token is not a lost message). Returns them (the caller sends their messages); a claim's
-- compare-and-swap makes a duplicate harmless. Steps have no index on
-- their state (see the baseline): they are read through their task's key.
CREATE FUNCTION tasker_recover_stuck_steps(p_tasks uuid[], p_stale_after interval, p_enqueued_after interval,
                                           p_limit integer)
RETURNS TABLE (task_uuid uuid, step_uuid uuid, was text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  r record;
  v_now timestamptz := clock_timestamp();
BEGIN
  FOR r IN
    WITH tasks AS MATERIALIZED (
      SELECT t.task_uuid FROM tasker_tasks t WHERE t.task_uuid = ANY (p_tasks) AND t.status = 'in_progress'
    )
    SELECT s.task_uuid, s.step_uuid, s.status
      FROM tasks t JOIN tasker_workflow_steps s ON s.task_uuid = t.task_uuid
     WHERE (s.status = 'in_progress' AND coalesce(s.heartbeat_at, s.started_at) < v_now - p_stale_after)
        OR (s.status = 'enqueued' AND tasker_queued_since(s.enqueued_at, s.retry_at) < v_now - p_enqueued_after)
        OR (s.status = 'waiting_for_retry' AND s.retry_at < v_now - p_enqueued_after)
     ORDER BY s.updated_at
     LIMIT p_limit
     FOR UPDATE OF s SKIP LOCKED
  LOOP
    IF r.status = 'enqueued' THEN
      UPDATE tasker_workflow_steps SET enqueued_at = clock_timestamp(), updated_at = clock_timestamp()
       WHERE tasker_workflow_steps.step_uuid = r.step_uuid;
    ELSE
      PERFORM tasker_transition_step(r.step_uuid, ARRAY[r.status], 'enqueued',
        CASE WHEN r.status = 'in_progress'
             THEN jsonb_build_object('recovered', 'no heartbeat from its worker: the worker is gone')
             ELSE jsonb_build_object('recovered', 'its retry message was lost') END);
      UPDATE tasker_workflow_steps SET enqueued_at = clock_timestamp(), retry_at = NULL
       WHERE tasker_workflow_steps.step_uuid = r.step_uuid;
    END IF;
    task_uuid := r.task_uuid;
    step_uuid := r.step_uuid;
    was := r.status;
    RETURN NEXT;
  END LOOP;
END $$;
