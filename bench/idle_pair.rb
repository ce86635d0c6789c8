# frozen_string_literal: true

# Idle latency of tasker_core (PGMQ, linear-4) and of Sidekiq's chain of 4,
# interleaved: both deployments run side by side, idle, and the driver
# alternates blocks of BENCH_PAIR_BLOCK runs of each (the order swapped
# every block) for BENCH_PAIR_BLOCKS blocks. This machine's speed drifts by
# a fifth or more within minutes, and the two latency scenarios run minutes
# apart: their ratio swung from 3.7x to 7.3x between runs of the same
# build. Interleaved, both sides see the same machine, and the ratio of
# the two p50s is what the latency targets are judged on.
#   ruby -Ilib bench/idle_pair.rb
require_relative "sidekiq_support"
require_relative "tasker_support"

blocks = Bench.env_int("BENCH_PAIR_BLOCKS", 12)
block = Bench.env_int("BENCH_PAIR_BLOCK", 25)
sidekiq = Bench::SidekiqChains
deployment = Bench::TaskerDeployment.new(provider: :pgmq)
sidekiq.redis(&:flushdb)
pid = sidekiq.spawn("idle_pair_sidekiq", concurrency: Bench.env_int("BENCH_CONCURRENCY", 10))
begin
  deployment.start
  deployment.warm_up(50)
  sidekiq.run_chains(500, "bench:pair:warmup", timeout: 120)
  uuids = []
  run = {
    sidekiq: ->(i) { sidekiq.idle_chain_ms("bench:pair:#{i}") },
    tasker: lambda do |_|
      uuid, seconds = deployment.run_timed("linear4", timeout: 30)
      uuids << uuid
      seconds * 1000
    end
  }
  20.times { |i| run.each_value { |one| one.call("warmup:#{i}") } }
  times = { sidekiq: [], tasker: [] }
  blocks.times do |b|
    order = b.even? ? %i[sidekiq tasker] : %i[tasker sidekiq]
    order.each do |side|
      block.times { |i| times[side] << run[side].call("#{b}:#{i}") }
    end
  end
  deployment.verify!(uuids, steps_per_task: 4)
  sidekiq.check_no_failures!
  Bench.stop_cleanly(pid, "sidekiq")
  pid = nil
  summary = times.transform_values do |ms|
    { p50_ms: Bench.percentile(ms, 50).round(2), p99_ms: Bench.percentile(ms, 99).round(2) }
  end
  # Per block, the ratio of the two sides' medians: how steady the ratio is.
  per_block = times[:tasker].each_slice(block).zip(times[:sidekiq].each_slice(block))
                            .map { |t, s| (Bench.median(t) / Bench.median(s)).round(2) }
  data = { runs_per_side: blocks * block, blocks: blocks, block: block,
           sidekiq_p50_ms: summary[:sidekiq][:p50_ms], sidekiq_p99_ms: summary[:sidekiq][:p99_ms],
           tasker_p50_ms: summary[:tasker][:p50_ms], tasker_p99_ms: summary[:tasker][:p99_ms],
           block_ratios: per_block, all_tasks_complete: true }
  deployment.stop
  Bench.write_part("idle_pair", data)
ensure
  Bench.stop_process(pid, "sidekiq") if pid
  deployment.stop if deployment.worker_pid
end
