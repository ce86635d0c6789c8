-- Installs what the engine adds to a PGMQ queue: the wake-up trigger on its
-- table, and two functions that send to it and ack from it,
-- pgmq.tasker_send_<queue>(messages, delays_ms) and
-- pgmq.tasker_ack_<queue>(msg_ids). A statement naming a queue's table
-- must be run as dynamic SQL, planned anew on every call (reading the
-- table's defaults and triggers each time); these functions' statements
-- are static and planned once per connection, and calling one by name is a
-- trivial dynamic statement: a task's creation cost a third less. Run for
-- every queue the PGMQ provider creates, and again for every existing
-- queue when the SQL functions are installed.
CREATE FUNCTION tasker_install_queue(p_queue text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_table text := pgmq.format_table_name(p_queue, 'q');
BEGIN
  EXECUTE format(
    'CREATE OR REPLACE TRIGGER tasker_notify_queue AFTER INSERT ON pgmq.%I '
    'FOR EACH STATEMENT EXECUTE FUNCTION tasker_notify_queue(%L)',
    v_table, p_queue);
  -- Messages in order, each visible after its delay (NULL: at once).
  EXECUTE format(
    'CREATE OR REPLACE FUNCTION pgmq.%I(p_messages jsonb[], p_delays_ms bigint[]) RETURNS void '
    'LANGUAGE plpgsql AS $body$ BEGIN '
    '  INSERT INTO pgmq.%I (vt, message) '
    '  SELECT clock_timestamp() + make_interval(secs => coalesce(u.d, 0) / 1000.0), u.m '
    '    FROM unnest(p_messages, p_delays_ms) WITH ORDINALITY AS u(m, d, i) ORDER BY u.i; '
    'END $body$',
    'tasker_send_' || p_queue, v_table);
  EXECUTE format(
    'CREATE OR REPLACE FUNCTION pgmq.%I(p_msg_ids bigint[]) RETURNS void '
    'LANGUAGE plpgsql AS $body$ BEGIN '
    '  DELETE FROM pgmq.%I WHERE msg_id = ANY (p_msg_ids); '
    'END $body$',
    'tasker_ack_' || p_queue, v_table);
END $$;
