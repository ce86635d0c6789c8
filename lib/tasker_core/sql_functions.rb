# frozen_string_literal: true

require "json"

module TaskerCore
  # The engine's SQL functions (core/sql/functions/*.sql) called from Ruby
  # on ActiveRecord's connection, so they join the caller's transaction.
  # This is the one place in Ruby that knows their parameters: a change of
  # signature is an edit here. TaskerCore.create_task and the test mode
  # (TaskerCore::Testing) go through it.
  module SqlFunctions
    module_function

    # tasker_create_task: the task, its steps and edges, root steps
    # enqueued (their messages inserted when `send`, PGMQ). Returns the
    # task's row (a Hash with string keys; a row inserted by the call is not
    # visible to a query around it, so it comes back with the call).
    # traceparent: stored with the task (its steps' spans continue it).
    # run_at (a Time) or delay_seconds (added to the database's clock)
    # makes a delayed task; timeout_seconds and priority override the
    # template's. priority_aging_ms: the aging step the queues key this
    # connection's messages with (messaging.priority_aging_ms; the engine's
    # own connections carry it as a session setting, ActiveRecord's do not).
    def create_task(namespace:, name:, version:, context:, identity_key:, send:, traceparent: nil, run_at: nil,
                    delay_seconds: nil, timeout_seconds: nil, priority: nil, priority_aging_ms: nil)
      parse(prepared_value(CREATE_TASK, [namespace, name, version, JSON.generate(context), identity_key, send,
                                         traceparent, run_at&.utc&.iso8601(6), delay_seconds, timeout_seconds,
                                         priority, priority_aging_ms]))
    end

    CREATE_TASK = "SELECT task_row FROM tasker_create_task($1, $2, $3, $4::jsonb, $5, $6::boolean, $7, " \
                  "coalesce($8::timestamptz, clock_timestamp() + make_interval(secs => $9::float8)), " \
                  "$10::integer, $11::integer, $12::integer)"

    # tasker_create_tasks: many tasks in one statement, each made as
    # create_task makes one. `tasks`: Hashes of create_task's keywords
    # above (namespace:, name:, version:, context:, identity_key:,
    # traceparent:, run_at:, delay_seconds:, timeout_seconds:, priority:).
    # Returns the tasks' rows, in the order given.
    def create_tasks(tasks, send:, priority_aging_ms: nil)
      tasks = tasks.map { |task| task.merge(run_at: task[:run_at]&.utc&.iso8601(6)).compact }
      connection.select_all(CREATE_TASKS, "TaskerCore", [JSON.generate(tasks), send, priority_aging_ms],
                            preparable: true).rows.map { |(row)| parse(row) }
    end

    CREATE_TASKS = "SELECT task_row FROM tasker_create_tasks($1::jsonb, $2::boolean, $3::integer)"

    # tasker_claim_steps: claims the steps (enqueued, a retry that is due,
    # or a stale claim) for `worker`, in `namespaces`. Returns one Hash per
    # step claimed (string keys, as the function's columns; task_row and
    # step_row parsed).
    def claim_steps(step_uuids, worker:, namespaces:, stale_after_seconds:)
      rows = select_all("SELECT * FROM tasker_claim_steps(?::uuid[], ?, ?::text[], make_interval(secs => ?), false)",
                        pg_array(step_uuids), worker, pg_array(namespaces), stale_after_seconds)
      rows.map { |row| row.merge("task_row" => parse(row["task_row"]), "step_row" => parse(row["step_row"])) }
    end

    # tasker_record_outcomes for one step: its result (`completed`) or its
    # error, fenced by `attempt`; no message is acked or sent (`send`
    # false returns the messages instead), and no dependent is claimed
    # eagerly (`eager_slots` 0): ready dependents are enqueued. Returns the
    # function's rows (kind, step_uuid, task_uuid, state, detail).
    def record_outcome(step_uuid:, attempt:, completed:, payload:, retryable:, delay_ms:, meta:, worker:,
                       namespaces:)
      sql = <<~SQL.squish
        SELECT kind, step_uuid, task_uuid, state, detail FROM tasker_record_outcomes(
          ARRAY[?::uuid], ARRAY[?::integer], ARRAY[?::boolean], ARRAY[?::jsonb], ARRAY[?::boolean],
          ARRAY[?::bigint], ARRAY[?::jsonb], ?, ?::text[], 0, false, ARRAY[NULL::text], ARRAY[NULL::bigint])
      SQL
      select_all(sql, step_uuid, attempt, completed, JSON.generate(payload), retryable, delay_ms, JSON.generate(meta),
                 worker, pg_array(namespaces))
    end

    # The namespaces a task's steps run in.
    def step_namespaces(task_uuid)
      connection.select_values(sanitize(<<~SQL.squish, task_uuid))
        SELECT DISTINCT ns.namespace FROM tasker_workflow_steps s
          JOIN tasker_named_steps ns ON ns.named_step_id = s.named_step_id
         WHERE s.task_uuid = ? ORDER BY 1
      SQL
    end

    def select_value(sql, *binds)
      connection.select_value(sanitize(sql, *binds))
    end

    # With the values bound, not quoted into the text (quoting them cost
    # 0.1 ms of a creation's 0.35 ms of Ruby), and as a prepared statement
    # where the connection allows them (database.yml's
    # prepared_statements), so PostgreSQL parses it once per connection.
    def prepared_value(sql, binds)
      connection.select_all(sql, "TaskerCore", binds, preparable: true).rows.dig(0, 0)
    end

    def select_all(sql, *binds)
      connection.select_all(sanitize(sql, *binds)).to_a
    end

    def sanitize(sql, *binds)
      Models::Base.sanitize_sql_array([sql, *binds])
    end

    def connection
      Models::Base.connection
    end

    # A PostgreSQL array literal of identifiers (uuids, namespaces): no
    # element needs quoting.
    def pg_array(values)
      "{#{values.join(',')}}"
    end

    def parse(json)
      json.is_a?(String) ? JSON.parse(json) : json
    end
  end
end
