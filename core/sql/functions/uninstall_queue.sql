-- Drops what tasker_install_queue added to a queue (its table and trigger
-- go with PGMQ's drop_queue).
CREATE FUNCTION tasker_uninstall_queue(p_queue text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP FUNCTION IF EXISTS pgmq.%I(jsonb[], bigint[])', 'tasker_send_' || p_queue);
  EXECUTE format('DROP FUNCTION IF EXISTS pgmq.%I(bigint[])', 'tasker_ack_' || p_queue);
END $$;
