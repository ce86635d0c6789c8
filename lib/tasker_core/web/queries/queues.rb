# frozen_string_literal: true

require "tasker_core/web/queries/base"

module TaskerCore
  class Web
    module Queries
      # The queues the engine uses: one per namespace, and the orchestration
      # queue. Names come from the database, never from a request.
      class Queues
        include Sql

        ORCHESTRATION = ["orchestration_step_results"].freeze

        Stat = Struct.new(:queue, :namespace, :depth, :visible, :oldest_age_seconds, :error, keyword_init: true)

        # namespace: only that namespace's queue.
        def initialize(namespace: nil)
          @namespace = namespace
        end

        def names
          @names ||= begin
            all = rows("SELECT name, queue_name FROM tasker_namespaces ORDER BY name")
                  .to_h { |r| [r["queue_name"], r["name"]] }
            @namespace ? all.select { |_, ns| ns == @namespace } : all.merge(ORCHESTRATION.to_h { |q| [q, nil] })
          end
        end

        def known?(queue)
          names.key?(queue)
        end

        def stats(message_service = TaskerCore.message_service)
          names.map do |queue, namespace|
            s = message_service.stats(queue)
            Stat.new(queue: queue, namespace: namespace, depth: s[:depth], visible: s[:visible],
                     oldest_age_seconds: s[:oldest_age_seconds])
          rescue TaskerCore::Error => e
            Stat.new(queue: queue, namespace: namespace, error: e.message)
          end
        end
      end
    end
  end
end
