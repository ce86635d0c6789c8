# frozen_string_literal: true

# The demo bin/demo runs: an orchestrator and Ruby workers embedded in this
# process run the example workflows end to end and print each task's DAG,
# per-step state and result, and timings.
require "tasker_core"
require_relative "handlers/squares"

TaskerCore.configure do |c|
  c.database_url = ENV.fetch("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tasker_development")
  c.template_paths = [File.join(__dir__, "templates")]
end
TaskerCore.logger.level = Logger::WARN

TaskerCore.migrate!
templates = TaskerCore.register_templates!
puts "registered templates: #{templates.join(', ')}"

runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: %w[examples], concurrency: 4 })
begin
  %w[linear_workflow diamond_workflow].each do |workflow|
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    task = TaskerCore.create_task(namespace: "examples", name: workflow, version: "1.0.0", context: { n: 6 })
    task.wait(timeout: 30)
    elapsed_ms = (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) * 1000

    puts
    puts "#{task.namespace}/#{task.name}@#{task.version}  task #{task.task_uuid}"
    puts "  status: #{task.status}   context: #{task.context.to_json}   wall time: #{format('%.1f', elapsed_ms)} ms"
    task.workflow_steps.each do |step|
      deps = step.dependencies.map(&:name)
      arrow = deps.empty? ? "(root)" : "<- #{deps.join(', ')}"
      puts format("  %-13s %-22s %-9s attempts=%d  result=%s", step.name, arrow, step.status, step.attempts,
                  step.results.to_json)
    end
    final = task.workflow_steps.last.results
    puts "  final result: #{final}#{final == 6**16 ? '  (= 6^16)' : "  (EXPECTED #{6**16})"}"
    abort "#{workflow} did not complete" unless task.complete? && final == 6**16
  end
ensure
  runtime.stop(timeout: 10)
end
