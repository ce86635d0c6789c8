# frozen_string_literal: true

require "tasker_core/web/queries/base"

module TaskerCore
  class Web
    module Queries
      # The first id of a transition table written at or after a moment.
      # Neither transition table indexes created_at, but ids and created_at
      # are both assigned when a row is inserted, so ids grow with time: a
      # binary search over the primary key finds the boundary in ~20 index
      # probes, and queries over "the last hour" then read only that hour's
      # rows however long the history is. The search starts a minute early
      # to absorb concurrent inserts; callers still filter on created_at.
      class TransitionWindow
        include Sql

        TABLES = %w[tasker_task_transitions tasker_workflow_step_transitions].freeze
        SLACK_SECONDS = 60

        def initialize(table)
          raise ArgumentError, "not a transition table: #{table}" unless TABLES.include?(table)

          @table = table
        end

        # An id such that the rows at or after it are those written since
        # `since` (give or take the slack); nil when there are none.
        def first_id_since(since)
          bound = since - SLACK_SECONDS
          low = value("SELECT min(id) FROM #{@table}")
          high = value("SELECT max(id) FROM #{@table}")
          return nil if low.nil? || !written_since?(high.to_i, since)

          low = low.to_i
          high = high.to_i
          # Invariant: the first row at or after `high` is recent; every row
          # before `low` is not. Ids have gaps (rolled-back inserts, deleted
          # tasks), so a probe lands on the next row that exists.
          while low < high
            middle = (low + high) / 2
            id, recent = probe(middle, bound)
            recent ? high = middle : low = id + 1
          end
          low
        end

        private

        def written_since?(id, since)
          truthy(value("SELECT created_at >= to_timestamp(?) FROM #{@table} WHERE id = ?", since.to_f, id))
        end

        # The first row at or after `id`, and whether it is newer than `bound`.
        def probe(id, bound)
          row = rows("SELECT id, created_at >= to_timestamp(?) AS recent FROM #{@table} " \
                     "WHERE id >= ? ORDER BY id LIMIT 1", bound.to_f, id).first
          [row["id"].to_i, truthy(row["recent"])]
        end
      end
    end
  end
end
