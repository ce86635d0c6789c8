# frozen_string_literal: true

# `require "tasker_core/rake_tasks"` in a Rakefile adds tasker:worker,
# tasker:orchestrator and tasker:status (see tasks/tasker.rake).
load File.expand_path("tasks/tasker.rake", __dir__)
