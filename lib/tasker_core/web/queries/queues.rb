# frozen_string_literal: true

require "tasker_core/web/queries/base"

module TaskerCore
  class Web
    module Queries
      # The queues the engine uses: one per namespace, and the orchestration
      # queue. Names come from the database, never from a request.
      class Queues
        include Sql

        Stat = Struct.new(:queue, :namespace, :depth, :visible, :oldest_age_seconds, :error, keyword_init: true)

        # namespace: only that namespace's queue.
        def initialize(namespace: nil)
          @namespace = namespace
        end

        def names
          @names ||= begin
            all = rows("SELECT name, queue_name FROM tasker_namespaces ORDER BY name")
                  .to_h { |r| [r["queue_name"], r["name"]] }
            @namespace ? all.select { |_, ns| ns == @namespace } : all.merge(TaskerCore.task_requests_queue => nil)
          end
        end

        def known?(queue)
          names.key?(queue)
        end

        def stats(message_service = TaskerCore.message_service)
          pgmq = message_service.provider == :pgmq
          names.map do |queue, namespace|
            s = pgmq ? pgmq_metrics(queue) : message_service.stats(queue)
            Stat.new(queue: queue, namespace: namespace, depth: s[:depth], visible: s[:visible],
                     oldest_age_seconds: s[:oldest_age_seconds])
          rescue TaskerCore::Error, ActiveRecord::StatementInvalid => e
            Stat.new(queue: queue, namespace: namespace, error: e.message.lines.first.strip)
          end
        end

        private

        # The queue's numbers (tasker_queue_stats: PGMQ's metrics, a delayed
        # message visible only once due), on this connection. MessageService
        # #stats runs the same function on the engine's pool.
        def pgmq_metrics(queue)
          row = rows("SELECT depth, visible, oldest_age_seconds FROM tasker_queue_stats(?)", queue).first
          { depth: row["depth"].to_i, visible: row["visible"].to_i,
            oldest_age_seconds: row["oldest_age_seconds"]&.to_i }
        end
      end
    end
  end
end
