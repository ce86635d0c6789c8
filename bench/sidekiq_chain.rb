# frozen_string_literal: true

# The baseline: Sidekiq (Debian's ruby-sidekiq) with local Redis, one
# process, concurrency 10, running chains of 4 noop jobs (each enqueues the
# next). Throughput: BENCH_SIDEKIQ_CHAINS chains submitted at once, timed
# to the last chain done, median of BENCH_BATCHES batches. Latency: one
# chain at a time, from perform_async to the last job's push, as seen by a
# BLPOP.
# BENCH_BULK_SIZE=N (the scenario sidekiq_chain_bulk) pushes the chains'
# first jobs N at a time (Sidekiq::Client.push_bulk), as tasker_core's bulk
# scenarios create their tasks with TaskerCore.create_tasks, and measures
# throughput only.
# BENCH_REDIS_FSYNC=always (the scenario sidekiq_chain_durable) runs it
# with Redis's append-only file synced on every write, as durable as a
# PostgreSQL commit, and restores Redis's settings after.
#   [BENCH_REDIS_FSYNC=always] ruby bench/sidekiq_chain.rb
require_relative "sidekiq_support"

batches = Bench.env_int("BENCH_BATCHES", 3)
chains = Bench.env_int("BENCH_SIDEKIQ_CHAINS", 5000)
repetitions = Bench.env_int("BENCH_LATENCY_REPS", 500)
concurrency = Bench.env_int("BENCH_CONCURRENCY", 10)
sidekiq = Bench::SidekiqChains

fsync = ENV["BENCH_REDIS_FSYNC"]
bulk = ENV["BENCH_BULK_SIZE"] && Integer(ENV["BENCH_BULK_SIZE"])
part = if fsync
         "sidekiq_chain_durable"
       elsif bulk
         "sidekiq_chain_bulk"
       else
         "sidekiq_chain"
       end
saved_config = sidekiq.redis do |r|
  %w[appendonly appendfsync].to_h { |key| [key, r.config(:get, key)[key]] }
end
if fsync
  sidekiq.redis do |r|
    r.config(:set, "appendfsync", fsync)
    r.config(:set, "appendonly", "yes")
  end
end
sidekiq.redis(&:flushdb)
pid = sidekiq.spawn(part, concurrency: concurrency)
begin
  sidekiq.run_chains(500, "bench:warmup", timeout: 120)
  throughput = Array.new(batches) do |i|
    elapsed = sidekiq.run_chains(chains, "bench:batch:#{i}", timeout: 900, bulk: bulk)
    result = { chains: chains, jobs: chains * 4, seconds: elapsed.round(3),
               jobs_per_s: (chains * 4 / elapsed).round(1) }
    Bench.log "sidekiq batch #{i + 1}/#{batches}: #{result}"
    result
  end
  unless bulk
    50.times { |i| sidekiq.idle_chain_ms("bench:latency:warmup:#{i}") }
    times = Array.new(repetitions) { |i| sidekiq.idle_chain_ms("bench:latency:#{i}") }
    latencies = { latency_repetitions: repetitions, p50_ms: Bench.percentile(times, 50).round(2),
                  p90_ms: Bench.percentile(times, 90).round(2), p99_ms: Bench.percentile(times, 99).round(2),
                  max_ms: times.max.round(2) }
  end
  memory = Bench.memory(pid)
  stats = sidekiq.check_no_failures!
  Bench.stop_cleanly(pid, "sidekiq")
  pid = nil
  Bench.write_part(part, {
                     sidekiq_version: Sidekiq::VERSION, concurrency: concurrency, batches: throughput,
                     jobs_per_s: Bench.median(throughput.map { |r| r[:jobs_per_s] }), bulk_size: bulk,
                     **latencies.to_h, processed_jobs: stats.processed, all_chains_complete: true,
                     sidekiq_rss_peak_mb: memory[:hwm_mb].round(1), sidekiq_rss_end_mb: memory[:rss_mb].round(1)
                   })
ensure
  Bench.stop_process(pid, "sidekiq") if pid
  sidekiq.redis { |r| saved_config.each { |key, value| r.config(:set, key, value) } } if fsync && saved_config
end
