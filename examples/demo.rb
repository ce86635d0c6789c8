# frozen_string_literal: true

# The demo bin/demo runs: an orchestrator and Ruby workers embedded in this
# process run the example workflows (linear, diamond, tree, mixed DAG) end
# to end and print each task's DAG, per-step state and result, and timings.
# bin/demo then runs the Rails app's order fulfillment (examples/rails_app).
require "tasker_core"
require_relative "handlers/squares"
require_relative "handlers/add_one"

TaskerCore.configure do |c|
  c.database_url = ENV.fetch("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tasker_development")
  c.template_paths = [File.join(__dir__, "templates")]
end
TaskerCore.logger.level = Logger::WARN

TaskerCore.migrate!
templates = TaskerCore.register_templates!
puts "registered templates: #{templates.join(', ')}"

# workflow => [context, the final step's expected result]
WORKFLOWS = {
  "linear_workflow" => [{ n: 6 }, 6**16],
  "diamond_workflow" => [{ n: 6 }, 6**16],
  "tree_workflow" => [{ n: 1 }, 17],
  "mixed_workflow" => [{ n: 1 }, 16]
}.freeze

runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: %w[examples], concurrency: 4 })
begin
  WORKFLOWS.each do |workflow, (context, expected)|
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    task = TaskerCore.create_task(namespace: "examples", name: workflow, version: "1.0.0", context: context)
    task.wait(timeout: 30)
    elapsed_ms = (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) * 1000

    puts
    puts "#{task.namespace}/#{task.name}@#{task.version}  task #{task.task_uuid}"
    puts "  status: #{task.status}   context: #{task.context.to_json}   wall time: #{format('%.1f', elapsed_ms)} ms"
    task.workflow_steps.each do |step|
      deps = step.dependencies.order(:position).map(&:name)
      arrow = deps.empty? ? "(root)" : "<- #{deps.join(', ')}"
      puts format("  %-17s %-40s %-9s attempts=%d  result=%s", step.name, arrow, step.status, step.attempts,
                  step.results.to_json)
    end
    final = task.workflow_steps.last.results
    puts "  final result: #{final}#{final == expected ? '' : "  (EXPECTED #{expected})"}"
    abort "#{workflow} did not complete" unless task.complete? && final == expected
  end
ensure
  runtime.stop(timeout: 10)
end
