# frozen_string_literal: true

# The bench conductor (`bin/bench`, `rake bench`): runs every scenario in a
# process of its own, one after another, then writes
# target/bench/results.json, results.md and results.png and prints the
# table. Exits non-zero when any scenario failed (a task that did not
# complete fails its scenario).
#   ruby -Ilib bench/bench.rb [scenario ...]    # default: all of them
require_relative "support"
require_relative "report"

module Bench
  BUDGET_S = 25 * 60
  # Kept back from the budget for stopping the last deployment and writing
  # the report.
  MARGIN_S = 60

  # name => [script, extra environment]. The flow's floor goes after the
  # latency scenarios (its WAL would have them wait on a checkpoint).
  # idle_pair measures both latencies again, interleaved: the latency
  # targets are judged on it (this machine's speed drifts between
  # scenarios minutes apart). The
  # PGMQ throughput run goes last:
  # it is the long run (100k steps) and stops early, with as many steps as
  # fit, when the 25-minute budget would be exceeded.
  SCENARIOS = {
    "pgmq_raw" => ["pgmq_raw.rb", {}],
    "sidekiq_chain" => ["sidekiq_chain.rb", {}],
    "sidekiq_chain_durable" => ["sidekiq_chain.rb", { "BENCH_REDIS_FSYNC" => "always" }],
    "tasker_pgmq_latency" => ["tasker_latency.rb", {}],
    "tasker_pgmq_latency_diamond4" => ["tasker_latency.rb",
                                       { "BENCH_LATENCY_TEMPLATE" => "diamond4", "BENCH_LATENCY_REPS" => "300" }],
    "idle_pair" => ["idle_pair.rb", {}],
    "tasker_fanout" => ["tasker_fanout.rb", {}],
    "web_dashboard" => ["web_dashboard.rb", {}],
    "tasker_rabbitmq_throughput" => ["tasker_throughput.rb",
                                     { "PROVIDER" => "rabbitmq", "BENCH_TASKS" => "1000",
                                       "BENCH_TOTAL_STEPS" => "12000" }],
    "sidekiq_chain_bulk" => ["sidekiq_chain.rb", { "BENCH_BULK_SIZE" => "100" }],
    "tasker_pgmq_throughput_bulk" => ["tasker_throughput.rb",
                                      { "PROVIDER" => "pgmq", "BENCH_BULK_SIZE" => "100", "BENCH_TASKS" => "1000",
                                        "BENCH_TOTAL_STEPS" => "12000" }],
    "tasker_rabbitmq_throughput_bulk" => ["tasker_throughput.rb",
                                          { "PROVIDER" => "rabbitmq", "BENCH_BULK_SIZE" => "100",
                                            "BENCH_TASKS" => "1000", "BENCH_TOTAL_STEPS" => "12000" }],
    "tasker_pgmq_throughput_no_orchestrator" => ["tasker_throughput.rb",
                                                 { "PROVIDER" => "pgmq", "BENCH_ORCHESTRATOR" => "0",
                                                   "BENCH_TASKS" => "1000", "BENCH_TOTAL_STEPS" => "12000" }],
    "flow_floor" => ["flow_floor.rb", {}],
    "tasker_pgmq_throughput" => ["tasker_throughput.rb", { "PROVIDER" => "pgmq" }]
  }.freeze

  def self.run(names)
    started_at = Float(ENV.fetch("BENCH_STARTED_AT", Time.now.to_f.to_s))
    fdatasync = prepare(names)
    scenarios = names.to_h { |name| [name, run_scenario(name, deadline: started_at + BUDGET_S - MARGIN_S)] }
    failed = scenarios.reject { |_, s| s["ok"] }.keys
    report = Report.new(scenarios: scenarios, wall_time_s: (Time.now.to_f - started_at).round(1), failed: failed,
                        fdatasync_per_s: fdatasync)
    report.write
    puts report.markdown
    abort "bench FAILED: #{failed.join(', ')}" unless failed.empty?
  end

  # Checks the names, clears earlier parts (each scenario writes
  # PARTS/<name>.json; only this run's results are reported, never a mix
  # of runs) and measures the disk.
  def self.prepare(names)
    unknown = names - SCENARIOS.keys
    abort "unknown scenario(s) #{unknown.join(', ')}; known: #{SCENARIOS.keys.join(', ')}" unless unknown.empty?

    FileUtils.rm_rf(PARTS)
    FileUtils.mkdir_p(PARTS)
    fdatasync = Machine.fdatasync_per_s
    log "disk: #{fdatasync} fdatasyncs/s (8 kB) where PostgreSQL keeps its WAL"
    fdatasync
  end

  # The 1, 5 and 15 minute load averages: other work on the machine skews
  # every figure, so the report keeps them.
  def self.load_average
    File.read("/proc/loadavg").split.first(3).join(" ")
  end

  def self.run_scenario(name, deadline:)
    script, env = SCENARIOS.fetch(name)
    load_before = load_average
    log "scenario #{name} (load average #{load_before})"
    t0 = monotonic
    ok = system({ "BENCH_DEADLINE" => deadline.to_s }.merge(env), RbConfig.ruby, "-I", File.join(ROOT, "lib"),
                File.join(__dir__, script), chdir: ROOT)
    result = { "ok" => ok, "seconds" => (monotonic - t0).round(1), "load_average_before" => load_before,
               "load_average_after" => load_average }
    log "scenario #{name} #{ok ? 'done' : 'FAILED'} in #{result['seconds']} s (load average #{load_average})"
    result
  end
end

Bench.run(ARGV.empty? ? Bench::SCENARIOS.keys : ARGV)
