-- A worker's outcome transaction, for a batch of steps it ran, in one
-- statement:
--   1. each task's row is locked (uuid order), so of two steps of a task
--      finishing together, the second sees the first's outcome;
--   2. each outcome is recorded if its step is still in progress at that
--      attempt (fenced: a claim taken over cannot be overwritten) - a
--      result, or a failure that waits for a retry (attempts left and
--      retryable; its delayed message is sent, visible after p_delays_ms)
--      or ends in error - with its history; any other outcome is kept in
--      the history as a late result;
--   3. the messages of the steps whose outcome applied are acked
--      (p_ack_queues/p_ack_receipts, one entry per step, NULL for a step
--      claimed eagerly or a provider outside PostgreSQL; the caller hands
--      back the message of an outcome that did not apply);
--   4. a fan-out step that completed makes its children (tasker_fan_out);
--      the dependents of completed steps that became ready are claimed for
--      this worker (eager dispatch: pending -> in_progress, at most
--      p_eager_slots, only in p_namespaces) or enqueued and sent;
--   5. tasks with nothing left end (complete, or error naming the failed
--      steps) and their waiters are notified. A task can end only where a
--      step ended in error, or a completed step left nothing unfinished
--      below it, or a step of the task failed before (has_failed_step):
--      only those tasks' steps are looked at, so the 999 branches of a
--      1,000-wide fan-out that finish before the last do not each scan
--      their task's steps (which have no index on their state).
-- The transaction commits without waiting for its WAL flush unless a task
-- ends. A crash can then take back only a suffix of outcomes (WAL is
-- written in order, and any later flushed commit flushes them), with the
-- eager claims, messages and PGMQ acks that came with them. The last state
-- a crash leaves is always one the sweep recovers: a step claimed from a
-- message is in progress (with PGMQ the claim and its message's ack go
-- back together; with RabbitMQ claims are flushed before the handler runs,
-- and the message acked after this commit), its claim goes stale and it
-- runs again, as after a worker crash; a message sent after a commit that
-- was lost names a step that is no longer enqueued and is dropped, and the
-- step is enqueued again when its parent runs again. A task's end is what
-- a caller waits for and sees, so that commit waits for the flush: nobody
-- sees a task end that a crash could take back.
-- Returns rows of five kinds:
--   'outcome'  step_uuid, state: the step's new state, NULL when not applied;
--   'claimed'  step_uuid, task_uuid, detail: the eager claim (as
--              tasker_claim_steps returns it);
--   'unsent'   detail {queue, message, delay_ms}: to send after commit
--              (p_send false: queues outside PostgreSQL);
--   'finished' task_uuid, state: a task that ended; detail {namespace,
--              correlation_id};
--   'skipped'  detail {namespace, template, count}: steps a decision
--              recorded here skipped, per step namespace and template
--              (for tasker_steps_skipped_total; only when a decision
--              applied, so an outcome without one pays nothing for it).
CREATE FUNCTION tasker_record_outcomes(
  p_steps uuid[], p_attempts integer[], p_completed boolean[], p_payloads jsonb[], p_retryable boolean[],
  p_delays_ms bigint[], p_meta jsonb[], p_worker text, p_namespaces text[], p_eager_slots integer,
  p_send boolean, p_ack_queues text[], p_ack_receipts bigint[])
RETURNS TABLE (kind text, step_uuid uuid, task_uuid uuid, state text, detail jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_live uuid[];
  v_flagged uuid[];
  v_errored uuid[];
  v_ending uuid[];
  v_states text[];
  v_done uuid[];
  v_retry uuid[];
  v_retry_delays bigint[];
  v_late uuid[];
  v_ready uuid[] := '{}';
  v_eager uuid[] := '{}';
  v_moving uuid[] := '{}';
  v_deciding uuid[];
  v_skipped uuid[] := '{}';
  v_problem text;
  v_limited uuid[];
  v_synchronous_commit text := current_setting('synchronous_commit');
  v_finished boolean := false;
  v_fan_outs uuid[];
  v_slotted uuid[];
  v_task_slots boolean;
  v_collecting boolean;
  r record;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  IF cardinality(p_steps) > 1 THEN
    IF cardinality(p_steps) <> (SELECT count(DISTINCT u.s) FROM unnest(p_steps) AS u(s)) THEN
      RAISE EXCEPTION 'tasker_record_outcomes: a step appears more than once in %', p_steps
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END IF;

  -- 1. The tasks' rows. Every row here and below is found by primary key
  -- in a MATERIALIZED step before any status is tested: a status condition
  -- that reaches a scan lets the planner walk a status index over every
  -- task or step in flight. The same read of the steps says, from their
  -- named steps, which are decision points and which fan out, and which
  -- hold a concurrency slot. Keys found in one table are looked up in
  -- another as = ANY (ARRAY(...)), not IN (...): a session keeps the plan
  -- it made on a young deployment's small tables, and IN let that plan be
  -- a hash join over the other table's whole primary key (step 4 read
  -- every step for every outcome that way).
  WITH steps AS MATERIALIZED (
    SELECT s.task_uuid, s.step_uuid, ns.decision, coalesce(ns.fan_out ? 'from', false) AS fans_out,
           s.concurrency_slot IS NOT NULL AS holds_slot
      FROM tasker_workflow_steps s JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
     WHERE s.step_uuid = ANY (p_steps)
  ), locked AS MATERIALIZED (
    SELECT t.task_uuid, t.status, t.has_failed_step, t.concurrency_slot FROM tasker_tasks t
     WHERE t.task_uuid = ANY (ARRAY(SELECT s.task_uuid FROM steps s))
     ORDER BY t.task_uuid FOR NO KEY UPDATE
  )
  SELECT coalesce(array_agg(l.task_uuid) FILTER (WHERE l.status = 'in_progress'), '{}'),
         coalesce(array_agg(l.task_uuid) FILTER (WHERE l.status = 'in_progress' AND l.has_failed_step), '{}'),
         (SELECT coalesce(array_agg(s.step_uuid), '{}') FROM steps s WHERE s.decision),
         ARRAY(SELECT s.step_uuid FROM steps s WHERE s.fans_out),
         ARRAY(SELECT s.step_uuid FROM steps s WHERE s.holds_slot),
         coalesce(bool_or(l.concurrency_slot IS NOT NULL), false)
    INTO v_live, v_flagged, v_deciding, v_fan_outs, v_slotted, v_task_slots
    FROM locked l;
  -- With queues outside PostgreSQL, the messages of waiters that slots
  -- given back here are handed to are this worker's to send after commit
  -- (see tasker_handed_messages): steps holding a slot, decisions (which
  -- may skip one) and tasks holding one (which may end here) collect them.
  v_collecting := NOT p_send AND (cardinality(v_slotted) > 0 OR cardinality(v_deciding) > 0 OR v_task_slots);

  -- A decision's result is checked before it is recorded: one that is not
  -- a decision, or names a step that is not a dependent, fails the step
  -- for good with the problem as its error (see tasker_decision_problem).
  IF cardinality(v_deciding) > 0 THEN
    FOR i IN 1 .. cardinality(p_steps) LOOP
      CONTINUE WHEN NOT (p_steps[i] = ANY (v_deciding) AND p_completed[i]);
      v_problem := tasker_decision_problem(p_steps[i], p_payloads[i]);
      IF v_problem IS NOT NULL THEN
        p_completed[i] := false;
        p_retryable[i] := false;
        p_payloads[i] := jsonb_build_object('class', 'TaskerCore::DecisionError', 'message', v_problem,
                                            'backtrace', '[]'::jsonb, 'attempt', p_attempts[i], 'retryable', false);
      END IF;
    END LOOP;
  END IF;

  -- A fan-out step's result without an array at its `from` key is
  -- recorded as a permanent failure (see fan_out.sql).
  IF cardinality(v_fan_outs) > 0 THEN
    SELECT f.completed, f.payloads, f.retryable INTO p_completed, p_payloads, p_retryable
      FROM tasker_validate_fan_outs(v_fan_outs, p_steps, p_completed, p_payloads, p_retryable) AS f;
  END IF;

  -- 2. The outcomes, fenced by attempt: the update's own condition is the
  -- fence (a row changed meanwhile is tested again as it is now), so no
  -- separate lock is taken, and the rows are updated in uuid order.
  WITH input AS MATERIALIZED (
    SELECT * FROM unnest(p_steps, p_attempts, p_completed, p_payloads, p_retryable, p_delays_ms, p_meta)
      WITH ORDINALITY AS u(step_uuid, attempt, completed, payload, retryable, delay_ms, meta, i)
     ORDER BY u.step_uuid
  ), moved AS (
    UPDATE tasker_workflow_steps s
       SET status = CASE WHEN i.completed THEN 'complete'
                         WHEN i.retryable AND i.attempt < s.max_attempts THEN 'waiting_for_retry'
                         ELSE 'error' END,
           transitions = s.transitions + 1, updated_at = clock_timestamp(),
           results = CASE WHEN i.completed THEN i.payload ELSE s.results END,
           last_error = CASE WHEN i.completed THEN s.last_error ELSE i.payload END,
           retry_at = CASE WHEN NOT i.completed AND i.retryable AND i.attempt < s.max_attempts
                           THEN clock_timestamp() + make_interval(secs => i.delay_ms / 1000.0) END,
           completed_at = CASE WHEN i.completed THEN clock_timestamp() ELSE s.completed_at END
      FROM input i
     WHERE s.step_uuid = i.step_uuid AND s.status = 'in_progress' AND s.attempts = i.attempt
    RETURNING s.step_uuid, s.task_uuid, s.status AS to_state, s.transitions, i.completed, i.payload, i.meta,
              i.delay_ms
  ), history AS (
    INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state, metadata)
    SELECT m.step_uuid, m.transitions, 'in_progress', m.to_state,
           CASE WHEN m.completed THEN coalesce(m.meta, '{}')
                ELSE coalesce(m.meta, '{}') || jsonb_build_object('error_class', m.payload ->> 'class',
                                                                  'error_message', m.payload ->> 'message') END
      FROM moved m
  )
  SELECT array_agg(a.to_state ORDER BY i.i),
         coalesce(array_agg(a.step_uuid) FILTER (WHERE a.to_state = 'complete'), '{}'),
         coalesce(array_agg(a.step_uuid ORDER BY i.i) FILTER (WHERE a.to_state = 'waiting_for_retry'), '{}'),
         coalesce(array_agg(a.delay_ms ORDER BY i.i) FILTER (WHERE a.to_state = 'waiting_for_retry'), '{}'),
         coalesce(array_agg(DISTINCT a.task_uuid) FILTER (WHERE a.to_state = 'waiting_for_retry'), '{}'),
         coalesce(array_agg(i.step_uuid ORDER BY i.i) FILTER (WHERE a.step_uuid IS NULL), '{}'),
         coalesce(array_agg(DISTINCT a.task_uuid) FILTER (WHERE a.to_state = 'error'), '{}')
    INTO v_states, v_done, v_retry, v_retry_delays, v_moving, v_late, v_errored
    FROM input i LEFT JOIN moved a ON a.step_uuid = i.step_uuid;

  RETURN QUERY SELECT 'outcome', u.s, NULL::uuid, u.st, NULL::jsonb FROM unnest(p_steps, v_states) AS u(s, st);

  -- Steps that held a concurrency slot and ended give it back, which hands
  -- it to the next waiter (see tasker_give_back_slots); with queues outside
  -- PostgreSQL, the waiters' messages are this worker's to send (see
  -- tasker_handed_messages), as are those of slots given back below.
  IF v_collecting THEN
    PERFORM tasker_collect_handed();
  END IF;
  IF cardinality(v_slotted) > 0 THEN
    PERFORM tasker_give_back_slots(v_slotted);
  END IF;

  -- Decisions recorded: the dependents they did not choose, and what can
  -- no longer run below them, end skipped (see tasker_apply_decisions).
  IF cardinality(v_deciding) > 0 AND cardinality(v_done) > 0 THEN
    v_skipped := tasker_apply_decisions(ARRAY(SELECT u.s FROM unnest(v_done) AS u(s) WHERE u.s = ANY (v_deciding)));
    IF cardinality(v_skipped) > 0 THEN
      RETURN QUERY SELECT 'skipped', NULL::uuid, NULL::uuid, NULL::text,
                          jsonb_build_object('namespace', ns.namespace, 'template', t.name, 'count', count(*))
                     FROM tasker_workflow_steps s
                     JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
                     JOIN tasker_tasks t ON t.task_uuid = s.task_uuid
                    WHERE s.step_uuid = ANY (v_skipped)
                    GROUP BY ns.namespace, t.name
                    ORDER BY ns.namespace, t.name;
    END IF;
  END IF;

  IF v_collecting THEN
    RETURN QUERY SELECT * FROM tasker_handed_messages();
  END IF;

  -- Fan-out steps that completed make their children, which step 4 then
  -- finds ready like any dependent (see fan_out.sql).
  IF cardinality(v_fan_outs) > 0 AND v_fan_outs && v_done THEN
    PERFORM tasker_fan_out(ARRAY(SELECT u.s FROM unnest(v_fan_outs) AS u(s) WHERE u.s = ANY (v_done)));
  END IF;

  IF cardinality(v_errored) > 0 THEN
    UPDATE tasker_tasks t SET has_failed_step = true
     WHERE t.task_uuid = ANY (v_errored) AND NOT t.has_failed_step;
  END IF;

  -- (Each later step is skipped when it has nothing to do: on the hot path
  -- most of them have nothing, and a statement or a function call costs
  -- its executor start-up even so.)
  IF cardinality(v_late) > 0 THEN
    FOR r IN SELECT * FROM unnest(p_steps, p_attempts, p_completed, p_payloads, p_meta) AS u(s, a, ok, payload, meta)
              WHERE u.s = ANY (v_late) LOOP
      PERFORM tasker_record_late_result(r.s,
        CASE WHEN r.ok THEN r.payload ELSE jsonb_build_object('error', r.payload) END,
        coalesce(r.meta, '{}') || jsonb_build_object('attempt', r.a));
    END LOOP;
  END IF;

  -- Retries: the delayed message is the schedule.
  IF cardinality(v_retry) > 0 THEN
    RETURN QUERY SELECT 'unsent', NULL::uuid, NULL::uuid, NULL::text,
                        jsonb_build_object('queue', m.queue, 'message', m.message, 'delay_ms', m.delay_ms)
                   FROM tasker_dispatch_messages(v_retry, v_retry_delays, p_send) AS m;
  END IF;

  -- 3. Acks.
  IF cardinality(array_remove(p_ack_queues, NULL)) > 0 THEN
    FOR r IN SELECT a.q, array_agg(a.receipt) AS receipts
               FROM unnest(p_steps, p_ack_queues, p_ack_receipts) AS a(s, q, receipt)
              WHERE a.q IS NOT NULL AND a.s <> ALL (v_late)
              GROUP BY a.q ORDER BY a.q LOOP
      EXECUTE format('SELECT pgmq.%I($1)', 'tasker_ack_' || r.q) USING r.receipts;
    END LOOP;
  END IF;

  -- 4. Dependents that became ready: every dependency complete, resolved
  -- manually or skipped, and the task still in progress (the dependents of
  -- steps a decision skipped too: a join runs after the branch that ran).
  -- A dependent's parents are searched newest first for one not finished: the branches of a fan-out
  -- finish roughly in the order they were created (their messages are read
  -- in that order), so the unfinished one is found among the last, where a
  -- search from the oldest passed every finished branch first and made a
  -- 1,000-wide join quadratic.
  IF cardinality(v_done) > 0 THEN
    WITH dependents AS MATERIALIZED (
      SELECT c.step_uuid, c.task_uuid, c.position, c.status, c.named_step_id
        FROM tasker_workflow_steps c
       WHERE c.step_uuid = ANY (ARRAY(SELECT e.to_step_uuid FROM tasker_workflow_step_edges e
                                       WHERE e.from_step_uuid = ANY (v_done || v_skipped)))
    ), ready AS MATERIALIZED (
      SELECT d.* FROM dependents d
       WHERE d.status = 'pending' AND d.task_uuid = ANY (v_live)
         AND (SELECT e.from_step_uuid FROM tasker_workflow_step_edges e
                JOIN tasker_workflow_steps p ON p.step_uuid = e.from_step_uuid
               WHERE e.to_step_uuid = d.step_uuid AND p.status NOT IN ('complete', 'resolved_manually', 'skipped')
               ORDER BY e.from_step_uuid DESC LIMIT 1) IS NULL
    )
    -- The first of them in this worker's namespaces, as many as it has
    -- free slots, are claimed for it (not those with a concurrency or rate
    -- limit: they are enqueued when tasker_limit_steps lets them go).
    SELECT coalesce(array_agg(r.step_uuid ORDER BY r.task_uuid, r.position), '{}'),
           coalesce((array_agg(r.step_uuid ORDER BY r.task_uuid, r.position)
                       FILTER (WHERE ns.namespace = ANY (p_namespaces) AND ns.concurrency IS NULL
                                 AND ns.rate_limit IS NULL))
                      [1:greatest(p_eager_slots, 0)], '{}'),
           v_moving || coalesce(array_agg(DISTINCT r.task_uuid), '{}'),
           coalesce(array_agg(r.step_uuid)
                      FILTER (WHERE ns.concurrency IS NOT NULL OR ns.rate_limit IS NOT NULL), '{}')
      INTO v_ready, v_eager, v_moving, v_limited
      FROM ready r JOIN tasker_named_steps ns ON ns.named_step_id = r.named_step_id;
    IF cardinality(v_limited) > 0 THEN
      v_ready := tasker_limit_steps(v_ready);
    END IF;

    IF cardinality(v_eager) > 0 THEN
      RETURN QUERY
        WITH claimed AS (
          UPDATE tasker_workflow_steps s
             SET status = 'in_progress', attempts = s.attempts + 1, transitions = s.transitions + 1,
                 started_at = clock_timestamp(), heartbeat_at = clock_timestamp(), updated_at = clock_timestamp()
           WHERE s.step_uuid = ANY (v_eager) AND s.status = 'pending'
          RETURNING s.step_uuid, s.task_uuid, s.named_step_id, s.attempts, s.transitions, to_jsonb(s.*) AS step_row
        ), history AS (
          INSERT INTO tasker_workflow_step_transitions (step_uuid, sort_key, from_state, to_state, metadata)
          SELECT c.step_uuid, c.transitions, 'pending', 'in_progress',
                 jsonb_build_object('worker', p_worker, 'attempt', c.attempts, 'eager', true)
            FROM claimed c
        )
        SELECT 'claimed', c.step_uuid, c.task_uuid, NULL::text,
               jsonb_build_object('namespace', ns.namespace, 'step_name', ns.name,
                                  'handler_callable', ns.handler_callable, 'handler_config', ns.handler_config,
                                  'decision', ns.decision,
                                  'attempts', c.attempts,
                                  'retryable', ns.retryable, 'max_attempts', ns.max_attempts,
                                  'backoff_base_ms', ns.backoff_base_ms, 'max_backoff_ms', ns.max_backoff_ms,
                                  'timeout_seconds', ns.timeout_seconds, 'task_row', to_jsonb(t.*),
                                  'step_row', c.step_row, 'task_uuid', c.task_uuid,
                                  'correlation_id', t.correlation_id)
          FROM claimed c
          JOIN tasker_named_steps ns ON ns.named_step_id = c.named_step_id
          JOIN tasker_tasks t ON t.task_uuid = c.task_uuid
         ORDER BY c.step_uuid;
    END IF;

    IF cardinality(v_ready) > cardinality(v_eager) THEN
      RETURN QUERY SELECT 'unsent', NULL::uuid, NULL::uuid, NULL::text,
                          jsonb_build_object('queue', m.queue, 'message', m.message, 'delay_ms', m.delay_ms)
                     FROM tasker_enqueue_steps(ARRAY(SELECT u.s FROM unnest(v_ready) AS u(s) WHERE u.s <> ALL (v_eager)),
                                               p_send) AS m;
    END IF;
  END IF;

  -- 5. Tasks with nothing left. A task whose steps just moved (a dependent
  -- made ready, a retry scheduled) cannot have ended; nor can one where no
  -- step failed and every completed step left something unfinished below
  -- it (a dependent still waiting for another parent).
  IF v_live <@ v_moving THEN
    RETURN;
  END IF;
  v_ending := v_errored || v_flagged;
  IF cardinality(v_done) > 0 AND NOT v_live <@ v_ending THEN
    v_ending := v_ending || ARRAY(
      SELECT DISTINCT s.task_uuid FROM tasker_workflow_steps s
       WHERE s.step_uuid = ANY (v_done)
         AND NOT EXISTS (SELECT 1 FROM tasker_workflow_step_edges e
                           JOIN tasker_workflow_steps c ON c.step_uuid = e.to_step_uuid
                          WHERE e.from_step_uuid = s.step_uuid
                            AND c.status NOT IN ('complete', 'resolved_manually', 'skipped')));
  END IF;
  v_ending := ARRAY(SELECT u.t FROM unnest(v_live) AS u(t) WHERE u.t <> ALL (v_moving) AND u.t = ANY (v_ending));
  IF cardinality(v_ending) = 0 THEN
    RETURN;
  END IF;
  FOR r IN SELECT * FROM tasker_finalize_tasks(v_ending)
  LOOP
    v_finished := true;
    RETURN QUERY SELECT 'finished', NULL::uuid, r.task_uuid, r.status,
                        jsonb_build_object('namespace', r.namespace, 'correlation_id', r.correlation_id);
  END LOOP;
  -- Tasks that ended here gave back their slots (tasker_transition_task).
  IF v_collecting AND v_task_slots THEN
    RETURN QUERY SELECT * FROM tasker_handed_messages();
  END IF;
  IF v_finished THEN
    PERFORM set_config('synchronous_commit', v_synchronous_commit, true);
  END IF;
END $$;
