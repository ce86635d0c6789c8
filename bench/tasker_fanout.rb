# frozen_string_literal: true

# Wall time of a 1 -> 1000 -> 1 fan-out (PGMQ), from create_task to the
# task complete; one warm-up run, then the median of BENCH_FANOUT_REPS.
#   ruby -Ilib bench/tasker_fanout.rb
require_relative "tasker_support"

repetitions = Bench.env_int("BENCH_FANOUT_REPS", 3)
name = "fanout_#{Bench::FANOUT_WIDTH}"
steps_per_task = Bench::FANOUT_WIDTH + 2
deployment = Bench::TaskerDeployment.new(provider: :pgmq)

begin
  deployment.start
  deployment.warm_up(20)
  run_one = -> { deployment.run_timed(name, timeout: 600) }
  run_one.call
  runs = Array.new(repetitions) { run_one.call }
  deployment.verify!(runs.map(&:first), steps_per_task: steps_per_task)
  seconds = runs.map(&:last)
  data = { width: Bench::FANOUT_WIDTH, steps_per_task: steps_per_task, repetitions: repetitions,
           all_tasks_complete: true, seconds: Bench.median(seconds).round(3), runs_s: seconds.map { |s| s.round(3) },
           steps_per_s: (steps_per_task / Bench.median(seconds)).round(1) }
  deployment.stop
  Bench.write_part("tasker_fanout", data)
ensure
  deployment.stop if deployment.worker_pid
end
