-- Wake-ups for queue readers: one NOTIFY per inserting statement (not per
-- row, and without PGMQ's throttle row, which every sender would lock).
-- A notification is a hint; readers poll as well.

CREATE FUNCTION tasker_notify_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('tasker_queue_' || TG_ARGV[0], '');
  RETURN NULL;
END $$;

CREATE FUNCTION tasker_install_queue_notify(p_queue text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format(
    'CREATE OR REPLACE TRIGGER tasker_notify_queue AFTER INSERT ON pgmq.%I '
    'FOR EACH STATEMENT EXECUTE FUNCTION tasker_notify_queue(%L)',
    pgmq.format_table_name(p_queue, 'q'), p_queue);
END $$;
