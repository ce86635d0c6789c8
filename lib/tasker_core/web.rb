# frozen_string_literal: true

require "rack"
require "erubi"
require "json"
require "securerandom"

require "tasker_core"

module TaskerCore
  # The operator dashboard, a Rack app. In Rails, behind the app's own
  # authentication:
  #   mount TaskerCore::Web => "/tasker"
  # Standalone: `rake tasker:web` or `bin/tasker-web` (see Web::Server).
  # Read-only mode hides every action and refuses every POST:
  #   TaskerCore::Web.read_only = true
  class Web
    class << self
      attr_writer :read_only, :refresh_interval_ms

      def read_only?
        @read_only == true
      end

      # How often a running task's page redraws its DAG.
      def refresh_interval_ms
        @refresh_interval_ms || 1000
      end

      def call(env)
        application.call(env)
      end

      def application
        @application ||= Application.new
      end
    end
  end
end

require "tasker_core/web/helpers"
require "tasker_core/web/csrf"
require "tasker_core/web/router"
require "tasker_core/web/dag"
require "tasker_core/web/queries/queues"
require "tasker_core/web/queries/overview"
require "tasker_core/web/queries/limit_waits"
require "tasker_core/web/queries/task_list"
require "tasker_core/web/queries/task_detail"
require "tasker_core/web/queries/templates"
require "tasker_core/web/queries/dead_letters"
require "tasker_core/web/view"
require "tasker_core/web/actions"
require "tasker_core/web/application"
