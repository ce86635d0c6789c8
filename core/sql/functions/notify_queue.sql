-- Wake-ups for queue readers: one NOTIFY per inserting statement (not per
-- row, and without PGMQ's throttle row, which every sender would lock). A
-- notification is a hint; readers poll as well. Triggers depend on this
-- function, so it keeps its signature and is replaced in place.
CREATE OR REPLACE FUNCTION tasker_notify_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('tasker_queue_' || TG_ARGV[0], '');
  RETURN NULL;
END $$;
