-- When an enqueued step began to wait in its queue: when it was enqueued,
-- or, for a step waiting for its rate limit's token (enqueued with a
-- delayed message), when the token came due (retry_at, when later: its
-- message is not visible before). Everything that ages an enqueued step
-- counts from here: the sweep's test for a lost message
-- (tasker_recover_stuck_steps), RabbitMQ's priority aging
-- (tasker_raise_priorities), status's stuck steps and oldest enqueued step,
-- and the dashboard's long-enqueued list. The planner inlines it.
CREATE FUNCTION tasker_queued_since(p_enqueued_at timestamptz, p_retry_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
  SELECT greatest(p_enqueued_at, p_retry_at)
$$;
