# frozen_string_literal: true

module TaskerCore
  class Web
    module Queries
      # Raw SQL on ActiveRecord's connection (the host app's, under Rails).
      # Times come back as epoch seconds (extract(epoch ...)) so that no
      # adapter-specific type casting is involved.
      module Sql
        private

        def connection
          Models::Base.connection
        end

        def rows(sql, *binds)
          connection.select_all(Models::Base.sanitize_sql_array([sql, *binds])).to_a
        end

        def value(sql, *binds)
          connection.select_value(Models::Base.sanitize_sql_array([sql, *binds]))
        end

        def truthy(value)
          [true, "t", "true"].include?(value)
        end

        def epoch(value)
          value.nil? ? nil : Time.at(value.to_f).utc
        end

        # The smallest UUIDv7 of a moment: task and step uuids are UUIDv7,
        # so a time range is a range of the primary key.
        def uuid_floor(time)
          ms = (time.to_f * 1000).floor
          format("%08x-%04x-0000-0000-000000000000", ms >> 16, ms & 0xffff)
        end
      end

      # What the queries of things in flight share: a namespace filter
      # (@namespace, nil for all), the steps of the tasks in progress, rows
      # with their times as Time.
      module InFlight
        private

        # The tasks in progress (t, through their partial index) joined to
        # their steps (s) that meet the condition: a lateral subquery, so
        # each task's steps are read through the task's key whatever the
        # statistics say.
        def steps_of_tasks_in_progress(condition)
          <<~SQL.strip
            tasker_tasks t
            JOIN LATERAL (SELECT * FROM tasker_workflow_steps s
                           WHERE s.task_uuid = t.task_uuid AND #{condition} OFFSET 0) s ON true
            WHERE t.status = 'in_progress' #{namespace_filter}
          SQL
        end

        # Every query aliases tasker_tasks as t.
        def namespace_filter
          @namespace ? "AND t.namespace = ?" : ""
        end

        def namespace_bind
          @namespace ? [@namespace] : []
        end

        def step_row(row)
          row.to_h do |key, value|
            key = key.to_sym
            case key
            when :beat_at, :started_at, :retry_at, :enqueued_at, :waited_until, :since then [key, epoch(value)]
            when :fresh then [key, truthy(value)]
            else [key, value]
            end
          end
        end
      end
    end
  end
end
