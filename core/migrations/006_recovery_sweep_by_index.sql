-- The recovery sweep's query was planned as a loop over the tasks in
-- progress, each scanning every in-flight step (1-2 s a sweep with 2,500
-- tasks in flight, once a second), because its time bounds used
-- clock_timestamp(), which no index can serve. Same rows, same order, same
-- locks; now one range scan of tasker_workflow_steps_in_flight_idx over
-- steps unchanged for the shorter of the two bounds (a claim sets
-- updated_at, so a stale claim or a long-enqueued step is one of them).
CREATE OR REPLACE FUNCTION tasker_recover_stuck_steps(p_stale_after interval, p_enqueued_after interval, p_limit integer)
RETURNS TABLE (task_uuid uuid, step_uuid uuid, was text) LANGUAGE plpgsql AS $$
DECLARE
  r record;
  v_now timestamptz := clock_timestamp();
  v_unchanged_since timestamptz := clock_timestamp() - least(p_stale_after, p_enqueued_after);
BEGIN
  FOR r IN
    SELECT s.task_uuid, s.step_uuid, s.status
      FROM tasker_workflow_steps s
     WHERE s.status IN ('enqueued', 'in_progress')
       AND s.updated_at < v_unchanged_since
       AND ((s.status = 'in_progress' AND coalesce(s.heartbeat_at, s.started_at) < v_now - p_stale_after)
            OR (s.status = 'enqueued' AND s.enqueued_at < v_now - p_enqueued_after))
       AND EXISTS (SELECT 1 FROM tasker_tasks t WHERE t.task_uuid = s.task_uuid AND t.status = 'in_progress')
     ORDER BY s.updated_at
     LIMIT p_limit
     FOR UPDATE OF s SKIP LOCKED
  LOOP
    UPDATE tasker_workflow_steps SET status = 'enqueued', enqueued_at = clock_timestamp(),
           updated_at = clock_timestamp() WHERE tasker_workflow_steps.step_uuid = r.step_uuid;
    IF r.status = 'in_progress' THEN
      PERFORM tasker_append_step_transition(r.step_uuid, 'in_progress', 'enqueued',
        jsonb_build_object('recovered', 'no heartbeat from its worker: the worker is gone'));
    END IF;
    task_uuid := r.task_uuid;
    step_uuid := r.step_uuid;
    was := r.status;
    RETURN NEXT;
  END LOOP;
END $$;
