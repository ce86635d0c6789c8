-- Opens the outcome transaction's collection of the steps a handed-over
-- concurrency slot enqueued for a queue outside PostgreSQL (see
-- tasker_handed_messages).
CREATE FUNCTION tasker_collect_handed() RETURNS void LANGUAGE sql AS $$
  SELECT set_config('tasker.handed_steps', '{}', true)
$$;
