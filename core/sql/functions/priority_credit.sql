-- How much earlier than its due time a message or a waiter of priority
-- p_priority (-5..5; NULL counts as 0) takes its turn: (priority + 5) aging
-- steps of `tasker.priority_aging_ms` (the engine's connections set it from
-- messaging.priority_aging_ms; 10 s when unset). Everything that is served
-- in order of a time keyed this way (a PGMQ queue's vt, a concurrency
-- slot's waiters) serves newer work of higher priority first, but lets a
-- waiting one be passed only by what came less than (the difference) aging
-- steps after it: nothing waits forever. See tasker_install_queue.
CREATE FUNCTION tasker_priority_credit(p_priority integer) RETURNS interval LANGUAGE sql STABLE AS $$
  SELECT make_interval(secs => (coalesce(p_priority, 0) + 5)
                               * coalesce(nullif(current_setting('tasker.priority_aging_ms', true), '')::float8, 10000)
                               / 1000.0)
$$;
