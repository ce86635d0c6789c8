-- A PGMQ queue's numbers, as pgmq.metrics gives them, except that a
-- message counts as visible only once it is due: a delayed message's vt
-- is earlier than when it becomes visible (it keeps its priority's credit;
-- see tasker_install_queue), which its `tasker_visible_at` header holds.
-- For status, metrics and the dashboard: it counts the whole table, as
-- pgmq.metrics does, for which a sequential scan is right. The engine's
-- connections turn sequential and bitmap scans off for the hot path (see
-- SESSION_SETTINGS in core/src/db/mod.rs); under those settings a count
-- walked each queue's whole primary key, 100-300 ms a queue whose table
-- held dead rows (23 s for `rake tasker:status` over 180 queues), so they
-- are back on for this function's own statements.
CREATE FUNCTION tasker_queue_stats(p_queue text)
RETURNS TABLE (depth bigint, visible bigint, total_sent bigint, oldest_age_seconds integer)
LANGUAGE plpgsql STABLE SET enable_seqscan = on SET enable_bitmapscan = on AS $$
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
