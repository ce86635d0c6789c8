# frozen_string_literal: true

# A worker process for the multi-process specs, started as a user would
# start one: configure, start, stop cleanly on SIGTERM/SIGINT.
#   NAMESPACES=fleet CONCURRENCY=4 ruby -Ilib spec/support/tasker_process.rb
require "tasker_core"
require_relative "../fixtures/handlers/probe_handlers"
require_relative "../fixtures/handlers/fleet_handlers"

TaskerCore.configure do |c|
  c.database_url = ENV.fetch("DATABASE_URL")
end
TaskerCore.logger.level = Logger::WARN

runtime = TaskerCore.start(orchestrator: ENV["ORCHESTRATOR"] == "1",
                           worker: { namespaces: ENV.fetch("NAMESPACES").split(","),
                                     concurrency: Integer(ENV.fetch("CONCURRENCY", "4")) })
stop = Queue.new
%w[TERM INT].each { |signal| trap(signal) { stop << signal } }
$stdout.puts "ready #{Process.pid}"
$stdout.flush
stop.pop
runtime.stop(timeout: 10)
