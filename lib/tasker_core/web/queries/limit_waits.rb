# frozen_string_literal: true

require "tasker_core/web/queries/base"

module TaskerCore
  class Web
    module Queries
      # What waits for a limit, for the overview: steps waiting for their
      # rate limit's token, steps and tasks waiting for a concurrency slot.
      # Bounded as the overview's queries are: the steps of the tasks in
      # progress through their task's key, the slots' waiters (a table that
      # holds only waiters) through their keys.
      class LimitWaits
        include Sql
        include InFlight

        LIST_LIMIT = 20

        # namespace: only that namespace's tasks.
        def initialize(namespace: nil)
          @namespace = namespace
        end

        # Enqueued steps whose rate limit's token is due later (their message
        # becomes visible then: see tasker_limit_steps): how many, and the
        # first LIST_LIMIT by when they may start, each with the bucket and
        # time of its latest wait in its history. A retry scheduled by a
        # failure is waiting_for_retry, never enqueued with a later retry_at.
        def rate_limited
          @rate_limited ||= {
            count: value("SELECT count(*) FROM #{steps_of_tasks_in_progress(RATE_LIMITED)}", *namespace_bind).to_i,
            steps: rows(<<~SQL, *namespace_bind).map { |r| step_row(r) }
              SELECT s.step_uuid, s.name, s.task_uuid, t.namespace, t.name AS task_name,
                     extract(epoch FROM s.retry_at) AS retry_at,
                     (#{latest_rate_limit_wait("tr.metadata->>'bucket'")}) AS bucket,
                     extract(epoch FROM (#{latest_rate_limit_wait("tr.metadata->>'until'")})::timestamptz) AS waited_until
                FROM #{steps_of_tasks_in_progress(RATE_LIMITED)}
               ORDER BY s.retry_at, s.step_uuid
               LIMIT #{LIST_LIMIT}
            SQL
          }
        end

        # Steps (pending, of a task in progress) and tasks (pending, not
        # started) waiting for a concurrency slot: how many of each, and the
        # first LIST_LIMIT in the order a freed slot goes to them (their
        # turn: priority, then age; see tasker_concurrency_waiters). Read from the slots' waiters (the
        # table holds only waiters; each one's step and task are found by
        # primary key); a waiter that moved on meanwhile (cancelled,
        # resolved) stays until its turn comes and is not counted.
        def slot_waits
          @slot_waits ||= begin
            counts = rows(<<~SQL, *namespace_bind).first
              SELECT count(*) FILTER (WHERE x.step_name IS NOT NULL) AS steps,
                     count(*) FILTER (WHERE x.step_name IS NULL) AS tasks
                FROM #{slot_waiters}
            SQL
            waiters = rows(<<~SQL, *namespace_bind).map { |r| step_row(r) }
              SELECT w.slot, extract(epoch FROM w.since) AS since, t.task_uuid, t.namespace, t.name AS task_name,
                     x.step_name
                FROM #{slot_waiters}
               ORDER BY w.turn, w.holder
               LIMIT #{LIST_LIMIT}
            SQL
            { steps: counts["steps"].to_i, tasks: counts["tasks"].to_i, waiters: waiters }
          end
        end

        private

        RATE_LIMITED = "s.status = 'enqueued' AND s.retry_at > clock_timestamp()"

        # A column of the step's (s) latest history row that says it waits
        # for its rate limit (tasker_limit_steps writes one per wait).
        def latest_rate_limit_wait(column)
          "SELECT #{column} FROM tasker_workflow_step_transitions tr " \
            "WHERE tr.step_uuid = s.step_uuid AND tr.to_state = 'pending' " \
            "AND tr.metadata->>'waiting_for' = 'rate_limit' ORDER BY tr.sort_key DESC LIMIT 1"
        end

        # The waiters (w) still waiting, with their task (t) and, for a
        # step, its name (x.step_name; NULL for a task waiting to start).
        # Each waiter's step and task are read by key (lateral subqueries:
        # a plain join lets a planner that expects few tasks in progress
        # walk all of them for each waiter).
        def slot_waiters
          <<~SQL.strip
            tasker_concurrency_waiters w
            JOIN LATERAL (SELECT s.task_uuid, s.name AS step_name FROM tasker_workflow_steps s
                           WHERE w.holder <> w.task_uuid AND s.step_uuid = w.holder AND s.status = 'pending'
                          UNION ALL
                          SELECT w.task_uuid, NULL WHERE w.holder = w.task_uuid) x ON true
            JOIN LATERAL (SELECT * FROM tasker_tasks t WHERE t.task_uuid = x.task_uuid OFFSET 0) t ON true
            WHERE t.status = CASE WHEN x.step_name IS NULL THEN 'pending' ELSE 'in_progress' END #{namespace_filter}
          SQL
        end
      end
    end
  end
end
