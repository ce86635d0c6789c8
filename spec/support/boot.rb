# frozen_string_literal: true

# TASKER_BOOT for the rake-task specs: what an app's boot would do.
require "tasker_core"
require_relative "../fixtures/handlers/probe_handlers"
require_relative "../fixtures/handlers/fleet_handlers"

root = File.expand_path("../..", __dir__)
TaskerCore.configure do |c|
  c.database_url = ENV.fetch("DATABASE_URL")
  c.template_paths = [File.join(root, "examples/templates"), File.join(root, "spec/fixtures/templates")]
end
