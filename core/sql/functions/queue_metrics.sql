-- A PGMQ queue's depth, visible messages, messages ever sent and the age
-- of its oldest message (pgmq.metrics), for status, metrics and the
-- dashboard. Counting reads the queue's table whole, for which a
-- sequential scan is right; the engine's connections turn sequential and
-- bitmap scans off for the hot path (see SESSION_SETTINGS in
-- core/src/db/mod.rs), and under those settings pgmq.metrics walked the
-- whole primary key instead: 100-300 ms a queue whose table held dead
-- rows, 23 s for `rake tasker:status` over 180 queues. They are back on
-- for this function's own statements.
CREATE FUNCTION tasker_queue_metrics(p_queue text)
RETURNS TABLE (depth bigint, visible bigint, total_sent bigint, oldest_age_seconds integer)
LANGUAGE sql STABLE SET enable_seqscan = on SET enable_bitmapscan = on AS $$
  SELECT m.queue_length, m.queue_visible_length, m.total_messages, m.oldest_msg_age_sec FROM pgmq.metrics(p_queue) m
$$;
