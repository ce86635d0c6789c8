-- A PGMQ queue's numbers, as pgmq.metrics gives them, except that a
-- message counts as visible only once it is due: a delayed message's vt
-- is earlier than when it becomes visible (it keeps its priority's credit;
-- see tasker_install_queue), which its `tasker_visible_at` header holds.
-- For status, metrics and the dashboard: it counts the whole table, as
-- pgmq.metrics does.
CREATE FUNCTION tasker_queue_stats(p_queue text)
RETURNS TABLE (depth bigint, visible bigint, total_sent bigint, oldest_age_seconds integer) LANGUAGE plpgsql AS $$
DECLARE
  v_table text := pgmq.format_table_name(p_queue, 'q');
BEGIN
  RETURN QUERY EXECUTE format(
    'SELECT count(*), '
    '       count(*) FILTER (WHERE vt <= now() '
    '                          AND coalesce((headers ->> ''tasker_visible_at'')::timestamptz, ''-infinity'') <= now()), '
    '       (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pgmq.%I), '
    '       extract(epoch FROM now() - min(enqueued_at))::integer '
    '  FROM pgmq.%I',
    v_table || '_msg_id_seq', v_table);
END $$;
