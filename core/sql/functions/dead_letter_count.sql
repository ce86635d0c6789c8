-- How many dead letters a PGMQ queue holds (the rows of its archive
-- table), counted with sequential scans allowed (see queue_stats.sql).
CREATE FUNCTION tasker_dead_letter_count(p_queue text)
RETURNS bigint LANGUAGE plpgsql STABLE SET enable_seqscan = on SET enable_bitmapscan = on AS $$
DECLARE
  v_count bigint;
BEGIN
  EXECUTE format('SELECT count(*) FROM pgmq.%I', pgmq.format_table_name(p_queue, 'a')) INTO v_count;
  RETURN v_count;
END $$;
