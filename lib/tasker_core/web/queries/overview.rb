# frozen_string_literal: true

require "tasker_core/web/queries/base"

module TaskerCore
  class Web
    module Queries
      # What the overview shows. Every query is bounded by an index (the
      # partial index of the tasks not finished, the primary keys), so the
      # page costs the same with a million finished tasks as with ten.
      # Steps have no index on their state (every change of a step's row
      # stays off the indexes): the lists of steps in some state read the
      # steps of the tasks in progress, each task's through its key.
      class Overview
        # UUIDv7 carries its creator's clock: a uuid key range starts a
        # minute early, and created_at decides.
        CLOCK_SLACK_SECONDS = 60

        include Sql
        include InFlight

        WINDOW = 3600
        IN_FLIGHT = %w[pending in_progress].freeze
        LIST_LIMIT = 20

        Minute = Struct.new(:at, :complete, :failed, :skipped, keyword_init: true)

        # namespace: only that namespace's tasks, steps and queue.
        def initialize(namespace: nil, now: Time.now, config: TaskerCore.client.config)
          @namespace = namespace
          @now = now
          @since = now - WINDOW
          @fresh_seconds = config.dig("messaging", "visibility_timeout_seconds").to_i
          @stuck_enqueued_seconds = config.dig("orchestration", "stuck_enqueued_seconds").to_i
        end

        attr_reader :namespace, :fresh_seconds, :stuck_enqueued_seconds

        # Pending and in-progress tasks, all of them (the partial index).
        def tasks_in_flight
          counts = rows("SELECT status, count(*) AS n FROM tasker_tasks t WHERE status IN ('pending', 'in_progress') " \
                        "#{namespace_filter} GROUP BY status", *namespace_bind).to_h { |r| [r["status"], r["n"].to_i] }
          IN_FLIGHT.to_h { |state| [state, counts.fetch(state, 0)] }
        end

        # Tasks created in the last hour, by their state now.
        def tasks_created_recently
          rows("SELECT status, count(*) AS n FROM tasker_tasks t WHERE task_uuid >= ?::uuid " \
               "AND created_at >= to_timestamp(?) #{namespace_filter} GROUP BY status ORDER BY status",
               uuid_floor(@since - CLOCK_SLACK_SECONDS), @since.to_f, *namespace_bind)
            .to_h { |r| [r["status"], r["n"].to_i] }
        end

        # The planner's estimate: counting a million rows costs a full scan.
        def tasks_estimate
          value("SELECT reltuples::bigint FROM pg_class WHERE oid = 'tasker_tasks'::regclass").to_i
        end

        # Steps that completed, attempts that failed (error or waiting for a
        # retry), and steps a decision skipped, per minute over the last
        # hour, oldest first.
        def steps_per_minute
          @steps_per_minute ||= begin
            counts = minute_counts
            last = (@now.to_f / 60).floor
            ((last - 59)..last).map do |minute|
              c = counts[minute]
              Minute.new(at: Time.at(minute * 60).utc, complete: c["complete"],
                         failed: c["error"] + c["waiting_for_retry"], skipped: c["skipped"])
            end
          end
        end

        # The last hour's totals of steps_per_minute.
        def steps_last_hour
          minutes = steps_per_minute
          %i[complete failed skipped].to_h { |outcome| [outcome, minutes.sum(&outcome)] }
        end

        # Steps that failed for good in the last hour, newest first, with
        # where their task and step stand now.
        def recent_failures
          step_window_rows(<<~SQL)
            SELECT t.task_uuid, t.namespace, t.name AS task_name, t.status AS task_status,
                   s.step_uuid, s.name AS step_name, s.status AS step_status,
                   s.last_error->>'class' AS error_class, s.last_error->>'message' AS error_message,
                   extract(epoch FROM tr.created_at) AS failed_at
              FROM tasker_workflow_step_transitions tr
              JOIN tasker_workflow_steps s ON s.step_uuid = tr.step_uuid
              JOIN tasker_tasks t ON t.task_uuid = s.task_uuid
             WHERE tr.created_at >= to_timestamp(?) AND tr.to_state = 'error' #{namespace_filter}
             ORDER BY tr.created_at DESC
             LIMIT #{LIST_LIMIT}
          SQL
        end

        # Steps in progress, split by heartbeat: fresh ones are live workers'
        # in-flight steps (the worker is named in the step's latest claim);
        # stale ones are stuck (their worker stopped beating).
        def in_progress
          @in_progress ||= in_progress_rows.map { |r| step_row(r) }.partition { |r| r[:fresh] }
        end

        def in_progress_rows
          rows(<<~SQL, @fresh_seconds, *namespace_bind)
            SELECT s.step_uuid, s.name, s.task_uuid, s.attempts, t.namespace, t.name AS task_name,
                   extract(epoch FROM coalesce(s.heartbeat_at, s.started_at)) AS beat_at,
                   extract(epoch FROM s.started_at) AS started_at,
                   coalesce(s.heartbeat_at, s.started_at) >= clock_timestamp() - make_interval(secs => ?) AS fresh,
                   (SELECT tr.metadata->>'worker' FROM tasker_workflow_step_transitions tr
                     WHERE tr.step_uuid = s.step_uuid AND tr.to_state = 'in_progress'
                     ORDER BY tr.sort_key DESC LIMIT 1) AS worker
              FROM #{steps_of_tasks_in_progress("s.status = 'in_progress'")}
             ORDER BY s.started_at
             LIMIT 500
          SQL
        end

        # { worker id => [its in-flight steps] }
        def live_workers
          in_progress.first.group_by { |r| r[:worker] || "(unknown worker)" }.sort.to_h
        end

        def stale_steps
          in_progress.last.first(LIST_LIMIT)
        end

        def waiting_for_retry
          rows(<<~SQL, *namespace_bind).map { |r| step_row(r) }
            SELECT s.step_uuid, s.name, s.task_uuid, s.attempts, s.max_attempts, t.namespace, t.name AS task_name,
                   extract(epoch FROM s.retry_at) AS retry_at, s.last_error->>'message' AS error_message
              FROM #{steps_of_tasks_in_progress("s.status = 'waiting_for_retry'")}
             ORDER BY s.retry_at
             LIMIT #{LIST_LIMIT}
          SQL
        end

        QUEUED_TOO_LONG = "s.status = 'enqueued' AND tasker_queued_since(s.enqueued_at, s.retry_at) " \
                          "< clock_timestamp() - make_interval(secs => ?)"

        # Enqueued for longer than the sweep tolerates before sending again
        # (since tasker_queued_since: a step waiting for its rate limit's
        # token, since the token came due).
        def long_enqueued
          rows(<<~SQL, @stuck_enqueued_seconds, *namespace_bind).map { |r| step_row(r) }
            SELECT s.step_uuid, s.name, s.task_uuid, s.attempts, t.namespace, t.name AS task_name,
                   extract(epoch FROM s.enqueued_at) AS enqueued_at
              FROM #{steps_of_tasks_in_progress(QUEUED_TOO_LONG)}
             ORDER BY s.enqueued_at
             LIMIT #{LIST_LIMIT}
          SQL
        end

        private

        # { minute => { state => steps } } of the last hour's history.
        def minute_counts
          counts = Hash.new { |hash, key| hash[key] = Hash.new(0) }
          step_window_rows(<<~SQL).each { |r| counts[r["minute"].to_i][r["to_state"]] += r["n"].to_i }
            SELECT floor(extract(epoch FROM tr.created_at) / 60)::bigint AS minute, tr.to_state, count(*) AS n
              FROM tasker_workflow_step_transitions tr
              #{namespace_join}
             WHERE tr.created_at >= to_timestamp(?)
               AND tr.to_state IN ('complete', 'error', 'waiting_for_retry', 'skipped') #{namespace_filter}
             GROUP BY 1, 2
          SQL
          counts
        end

        # The last hour's step history, read through the BRIN index on
        # created_at.
        def step_window_rows(sql)
          rows(sql, @since.to_f, *namespace_bind)
        end

        def namespace_join
          return "" unless @namespace

          "JOIN tasker_workflow_steps s ON s.step_uuid = tr.step_uuid JOIN tasker_tasks t ON t.task_uuid = s.task_uuid"
        end
      end
    end
  end
end
