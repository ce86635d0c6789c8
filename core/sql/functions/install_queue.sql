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
--
-- Priorities. A worker reads a queue in order of `vt` (PGMQ's own index on
-- it), and vt is a message's key as well as its visibility time: the time
-- it becomes visible minus a credit of (priority + 5) aging steps, the
-- message's `priority` (-5..5, its task's; 0 when it has none) and the
-- aging step (tasker_priority_credit). Every message sent to a queue gets
-- it: the send functions installed here, and what the engine sends from
-- outside them (the sweep's re-sends, dead-letter replays). A message of priority p sent at t is read before one of
-- priority q sent at u exactly when t - p * aging < u - q * aging: newer
-- work of higher priority goes first, but a waiting message is passed
-- only by messages sent less than (q - p) * aging after it, so nothing
-- waits forever. The key costs no column and no index: vt and its index
-- are PGMQ's own. Every credit is zero or more, so a message is never
-- visible later than it should be; a delayed message (a retry, a step
-- waiting for its rate limit's token) keeps its credit and carries when it
-- becomes visible in `headers` ({"tasker_visible_at": ...}), which the
-- read checks. A message whose visibility timeout runs out (its reader
-- died) comes back with vt = its timeout's end: it is then read as a
-- message of priority -5 sent at that moment.
CREATE FUNCTION tasker_install_queue(p_queue text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_table text := pgmq.format_table_name(p_queue, 'q');
BEGIN
  EXECUTE format(
    'CREATE OR REPLACE TRIGGER tasker_notify_queue AFTER INSERT ON pgmq.%I '
    'FOR EACH STATEMENT EXECUTE FUNCTION tasker_notify_queue(%L)',
    v_table, p_queue);
  -- Messages in order, each visible after its delay (NULL: at once), keyed
  -- by its priority (above).
  EXECUTE format(
    'CREATE OR REPLACE FUNCTION pgmq.%I(p_messages jsonb[], p_delays_ms bigint[]) RETURNS void '
    'LANGUAGE plpgsql AS $body$ BEGIN '
    '  INSERT INTO pgmq.%I (vt, message, headers) '
    '  SELECT clock_timestamp() + make_interval(secs => coalesce(u.d, 0) / 1000.0) '
    '           - tasker_priority_credit((u.m ->> ''priority'')::integer), '
    '         u.m, '
    '         CASE WHEN u.d > 0 THEN jsonb_build_object(''tasker_visible_at'', '
    '                                                   clock_timestamp() + make_interval(secs => u.d / 1000.0)) END '
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
