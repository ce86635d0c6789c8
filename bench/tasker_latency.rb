# frozen_string_literal: true

# Idle create-to-complete latency of a workflow (PGMQ): one task at a time,
# timed from the create_task call until `task.wait` returns it complete
# (wake-ups by NOTIFY, as in production). BENCH_LATENCY_TEMPLATE picks the
# workflow: linear4 (default; four steps in a row) or diamond4 (a step, four
# in parallel, a join).
#   [BENCH_LATENCY_TEMPLATE=diamond4] ruby -Ilib bench/tasker_latency.rb
require_relative "tasker_support"

repetitions = Bench.env_int("BENCH_LATENCY_REPS", 500)
template = ENV.fetch("BENCH_LATENCY_TEMPLATE", "linear4")
steps_per_task = { "linear4" => 4, "diamond4" => 6 }.fetch(template)
deployment = Bench::TaskerDeployment.new(provider: :pgmq)

begin
  deployment.start
  deployment.warm_up(50)
  run_one = -> { deployment.run_timed(template, timeout: 30) }
  20.times { run_one.call }
  runs = Array.new(repetitions) { run_one.call }
  deployment.verify!(runs.map(&:first), steps_per_task: steps_per_task)
  times = runs.map { |_, seconds| seconds * 1000 }
  data = { provider: "pgmq", template: template, repetitions: repetitions, all_tasks_complete: true,
           p50_ms: Bench.percentile(times, 50).round(2), p90_ms: Bench.percentile(times, 90).round(2),
           p99_ms: Bench.percentile(times, 99).round(2), min_ms: times.min.round(2), max_ms: times.max.round(2),
           mean_ms: (times.sum / times.size).round(2) }
  deployment.stop
  Bench.write_part(template == "linear4" ? "tasker_pgmq_latency" : "tasker_pgmq_latency_#{template}", data)
ensure
  deployment.stop if deployment.worker_pid
end
