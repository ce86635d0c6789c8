# frozen_string_literal: true

# Wall time of a 1 -> 1000 -> 1 fan-out (PGMQ), from create_task to the
# task complete; one warm-up run, then the median of BENCH_FANOUT_REPS.
# The same, in the same deployment, for the dynamic fan-out
# (bench/templates/dynamic_fanout.yaml: the 1,000 steps made at run time
# from the first step's result).
#   ruby -Ilib bench/tasker_fanout.rb
require_relative "tasker_support"

repetitions = Bench.env_int("BENCH_FANOUT_REPS", 3)
name = "fanout_#{Bench::FANOUT_WIDTH}"
steps_per_task = Bench::FANOUT_WIDTH + 2
# BENCH_DATABASE (a name starting tasker_bench): run alone on a database of its
# own, dropped and made anew.
deployment = Bench::TaskerDeployment.new(provider: :pgmq, database: ENV.fetch("BENCH_DATABASE", nil))

begin
  deployment.start
  deployment.warm_up(20)
  run_one = -> { deployment.run_timed(name, timeout: 600) }
  run_one.call
  runs = Array.new(repetitions) { run_one.call }
  deployment.verify!(runs.map(&:first), steps_per_task: steps_per_task)
  seconds = runs.map(&:last)
  run_dynamic = lambda do
    t0 = Bench.monotonic
    task = TaskerCore.create_task(namespace: Bench::NAMESPACE, name: "dynamic_fanout", version: "1.0.0",
                                  context: { width: Bench::FANOUT_WIDTH }).wait(timeout: 600)
    raise "dynamic_fanout task #{task.task_uuid} ended #{task.status}" unless task.complete?

    [task.task_uuid, Bench.monotonic - t0]
  end
  run_dynamic.call
  dynamic = Array.new(repetitions) { run_dynamic.call }
  deployment.verify!(dynamic.map(&:first), steps_per_task: steps_per_task)
  dynamic_seconds = dynamic.map(&:last)
  data = { width: Bench::FANOUT_WIDTH, steps_per_task: steps_per_task, repetitions: repetitions,
           all_tasks_complete: true, seconds: Bench.median(seconds).round(3), runs_s: seconds.map { |s| s.round(3) },
           steps_per_s: (steps_per_task / Bench.median(seconds)).round(1),
           dynamic_seconds: Bench.median(dynamic_seconds).round(3),
           dynamic_runs_s: dynamic_seconds.map { |s| s.round(3) },
           dynamic_steps_per_s: (steps_per_task / Bench.median(dynamic_seconds)).round(1) }
  deployment.stop
  Bench.write_part("tasker_fanout", data)
ensure
  deployment.stop if deployment.worker_pid
end
