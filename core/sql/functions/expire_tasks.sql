-- Ends tasks still in progress past their deadline (at most p_limit,
-- earliest first; a task another transaction holds is left for the next
-- pass): in_progress -> error with reason 'deadline' in the history's
-- metadata, and every unfinished step cancelled with the same reason
-- (tasker_cancel_unfinished_steps, as tasker_cancel_task does). Returns the
-- tasks ended.
CREATE FUNCTION tasker_expire_tasks(p_limit integer)
RETURNS TABLE (task_uuid uuid, namespace text, timeout_seconds integer) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  r record;
  v_meta jsonb;
BEGIN
  FOR r IN SELECT t.task_uuid, t.namespace, t.timeout_seconds, t.deadline_at FROM tasker_tasks t
            WHERE t.status = 'in_progress' AND t.deadline_at <= clock_timestamp()
            ORDER BY t.deadline_at LIMIT p_limit FOR NO KEY UPDATE SKIP LOCKED
  LOOP
    v_meta := jsonb_build_object('reason', 'deadline', 'timeout_seconds', r.timeout_seconds,
                                 'deadline_at', r.deadline_at);
    CONTINUE WHEN tasker_transition_task(r.task_uuid, ARRAY['in_progress'], 'error', v_meta) IS NULL;
    PERFORM tasker_cancel_unfinished_steps(r.task_uuid, v_meta);
    task_uuid := r.task_uuid;
    namespace := r.namespace;
    timeout_seconds := r.timeout_seconds;
    RETURN NEXT;
  END LOOP;
END $$;
