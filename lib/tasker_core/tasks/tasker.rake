# frozen_string_literal: true

# Rake tasks for running tasker_core. In Rails they load the app first
# (`environment`); elsewhere set TASKER_BOOT to a Ruby file that configures
# TaskerCore and loads the handlers.
#   rake tasker:worker NAMESPACES=fulfillment,billing CONCURRENCY=8
#   rake tasker:orchestrator
#   rake tasker:status

namespace :tasker do
  task :boot do
    Rake::Task["environment"].invoke if Rake::Task.task_defined?("environment")
    require ENV["TASKER_BOOT"] if ENV["TASKER_BOOT"]
    require "tasker_core"
  end

  desc "Run a worker (NAMESPACES, CONCURRENCY); stops cleanly on SIGTERM/SIGINT"
  task worker: :boot do
    namespaces = ENV.fetch("NAMESPACES") { raise TaskerCore::ConfigurationError, "set NAMESPACES=a,b" }.split(",")
    TaskerCore::Launcher.run(worker: { namespaces: namespaces, concurrency: Integer(ENV.fetch("CONCURRENCY", "4")) },
                             orchestrator: false)
  end

  desc "Run an orchestrator; stops cleanly on SIGTERM/SIGINT"
  task orchestrator: :boot do
    TaskerCore::Launcher.run(orchestrator: true, worker: nil)
  end

  desc "Print queue depths and task counts by status"
  task status: :boot do
    puts TaskerCore::Launcher.status_report
  end
end
