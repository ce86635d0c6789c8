# frozen_string_literal: true

require "tasker_core/web/queries/base"

require "time"

module TaskerCore
  class Web
    module Queries
      # The task list: filters and keyset pagination over the primary key.
      # Task uuids are UUIDv7, so ordering by uuid is ordering by creation,
      # a page is one index range scan (LIMIT 51) whatever the page number,
      # and a time range narrows the same index.
      class TaskList
        include Sql

        PAGE_SIZE = 50
        STATES = %w[pending in_progress complete error cancelled].freeze
        UUID_FORMAT = /\A\h{8}-\h{4}-\h{4}-\h{4}-\h{12}\z/
        COLUMNS = %i[task_uuid namespace name version status identity_key created_at updated_at completed_at].freeze
        # Creation time and uuid time can differ by as long as a creating
        # transaction lasts; the uuid range is widened by this much and the
        # exact filter is on created_at.
        UUID_SLACK = 86_400

        Page = Struct.new(:tasks, :newer, :older, keyword_init: true)

        attr_reader :filters, :errors

        def initialize(params)
          @errors = []
          @filters = {
            namespace: text(params["namespace"]), name: text(params["name"]), version: text(params["version"]),
            status: text(params["status"]), from: time(params, "from"), to: time(params, "to")
          }
          @before = uuid(params["before"])
          @after = uuid(params["after"])
        end

        # Newest first. `before`: the page after (older than) a uuid;
        # `after`: the page before it (newer), read upwards and reversed.
        def page
          @after ? page_after : page_before
        end

        # A task by uuid or identity key, for "find".
        def self.find(query)
          query = query.to_s.strip
          return nil if query.empty?

          scope = Models::Task.select(:task_uuid)
          (scope.find_by(task_uuid: query.downcase) if UUID_FORMAT.match?(query)) || scope.find_by(identity_key: query)
        end

        private

        def page_before
          scope = @before ? filtered.where("task_uuid < ?", @before) : filtered
          tasks = scope.limit(PAGE_SIZE + 1).to_a
          shown = tasks.first(PAGE_SIZE)
          Page.new(tasks: shown, newer: (shown.first&.task_uuid if @before),
                   older: (shown.last.task_uuid if tasks.size > PAGE_SIZE))
        end

        def page_after
          tasks = filtered.where("task_uuid > ?", @after).reorder(task_uuid: :asc).limit(PAGE_SIZE + 1).to_a.reverse
          shown = tasks.last(PAGE_SIZE)
          Page.new(tasks: shown, newer: (shown.first&.task_uuid if tasks.size > PAGE_SIZE),
                   older: shown.last&.task_uuid)
        end

        def filtered
          scope = Models::Task.select(*COLUMNS).order(task_uuid: :desc)
          scope = scope.where(namespace: @filters[:namespace]) if @filters[:namespace]
          scope = scope.where(name: @filters[:name]) if @filters[:name]
          scope = scope.where(version: @filters[:version]) if @filters[:version]
          scope = scope.where(status: @filters[:status]) if @filters[:status]
          if (from = @filters[:from])
            scope = scope.where("task_uuid >= ?::uuid AND created_at >= to_timestamp(?)",
                                uuid_floor(from - UUID_SLACK), from.to_f)
          end
          if (to = @filters[:to])
            scope = scope.where("task_uuid < ?::uuid AND created_at < to_timestamp(?)",
                                uuid_floor(to + UUID_SLACK), to.to_f)
          end
          scope
        end

        def text(value)
          value = value.to_s.strip
          value.empty? ? nil : value
        end

        def uuid(value)
          value = value.to_s.strip.downcase
          UUID_FORMAT.match?(value) ? value : nil
        end

        # <input type="datetime-local"> sends 2026-12-01T14:30; read as UTC.
        def time(params, key)
          value = text(params[key])
          return nil unless value

          Time.iso8601(value.length == 16 ? "#{value}:00Z" : value)
        rescue ArgumentError
          @errors << "#{key} is not a time: #{value}"
          nil
        end
      end
    end
  end
end
