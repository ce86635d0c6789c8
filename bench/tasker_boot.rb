# frozen_string_literal: true

# TASKER_BOOT for the bench's worker processes (`rake tasker:worker`):
# configures TaskerCore from the environment (DATABASE_URL,
# TASKER_MESSAGING_PROVIDER) and loads the noop handlers.
require "tasker_core"
require_relative "support"
require_relative "handlers"

TaskerCore.configure do |c|
  c.database_url = ENV.fetch("DATABASE_URL")
  c.template_paths = Bench::TEMPLATE_PATHS
end
TaskerCore.logger.level = Logger::WARN
