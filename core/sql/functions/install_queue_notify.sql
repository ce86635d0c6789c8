-- Installs the wake-up trigger on a PGMQ queue's table.
CREATE FUNCTION tasker_install_queue_notify(p_queue text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format(
    'CREATE OR REPLACE TRIGGER tasker_notify_queue AFTER INSERT ON pgmq.%I '
    'FOR EACH STATEMENT EXECUTE FUNCTION tasker_notify_queue(%L)',
    pgmq.format_table_name(p_queue, 'q'), p_queue);
END $$;
