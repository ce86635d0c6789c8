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
require_relative "support"

ENV["REDIS_URL"] ||= "redis://127.0.0.1:6379/15"
require_relative "sidekiq_jobs"
require "sidekiq/api"

batches = Bench.env_int("BENCH_BATCHES", 3)
chains = Bench.env_int("BENCH_SIDEKIQ_CHAINS", 5000)
repetitions = Bench.env_int("BENCH_LATENCY_REPS", 500)
concurrency = Bench.env_int("BENCH_CONCURRENCY", 10)

def redis(&block)
  Sidekiq.redis(&block)
end

def push_chains(count, key, bulk)
  return count.times { Bench::ChainJob.perform_async(key, 1) } unless bulk

  count.times.each_slice(bulk) do |slice|
    Sidekiq::Client.push_bulk("class" => Bench::ChainJob, "args" => slice.map { [key, 1] })
  end
end

def run_chains(count, key, timeout:, bulk: nil)
  redis { |r| r.del(key) }
  t0 = Bench.monotonic
  push_chains(count, key, bulk)
  deadline = t0 + timeout
  until redis { |r| r.llen(key) } >= count
    raise "Sidekiq chains not done after #{timeout} s (#{redis { |r| r.llen(key) }}/#{count})" if
      Bench.monotonic > deadline

    sleep 0.01
  end
  elapsed = Bench.monotonic - t0
  done = redis { |r| r.llen(key) }
  raise "expected #{count} chains done, found #{done}" unless done == count

  elapsed
end

fsync = ENV["BENCH_REDIS_FSYNC"]
bulk = ENV["BENCH_BULK_SIZE"] && Integer(ENV["BENCH_BULK_SIZE"])
part = if fsync
         "sidekiq_chain_durable"
       elsif bulk
         "sidekiq_chain_bulk"
       else
         "sidekiq_chain"
       end
saved_config = redis do |r|
  %w[appendonly appendfsync].to_h { |key| [key, r.config(:get, key)[key]] }
end
if fsync
  redis do |r|
    r.config(:set, "appendfsync", fsync)
    r.config(:set, "appendonly", "yes")
  end
end
redis(&:flushdb)
sidekiq_log = File.join(Bench::OUT, "#{part}.log")
pid = Process.spawn({ "REDIS_URL" => ENV.fetch("REDIS_URL") }, "sidekiq", "-r", File.join(__dir__, "sidekiq_jobs.rb"),
                    "-c", concurrency.to_s, "-q", "bench", "-e", "production",
                    out: sidekiq_log, err: %i[child out])
begin
  run_chains(500, "bench:warmup", timeout: 120)
  throughput = Array.new(batches) do |i|
    elapsed = run_chains(chains, "bench:batch:#{i}", timeout: 900, bulk: bulk)
    result = { chains: chains, jobs: chains * 4, seconds: elapsed.round(3),
               jobs_per_s: (chains * 4 / elapsed).round(1) }
    Bench.log "sidekiq batch #{i + 1}/#{batches}: #{result}"
    result
  end
  latency = lambda do |i|
    key = "bench:latency:#{i}"
    t0 = Bench.monotonic
    Bench::ChainJob.perform_async(key, 1)
    raise "chain #{i} not done within 10 s" unless redis { |r| r.blpop(key, timeout: 10) }

    (Bench.monotonic - t0) * 1000
  end
  # (The bulk scenario measures throughput only.)
  unless bulk
    50.times { |i| latency.call("warmup:#{i}") }
    times = Array.new(repetitions) { |i| latency.call(i) }
    latencies = { latency_repetitions: repetitions, p50_ms: Bench.percentile(times, 50).round(2),
                  p90_ms: Bench.percentile(times, 90).round(2), p99_ms: Bench.percentile(times, 99).round(2),
                  max_ms: times.max.round(2) }
  end
  memory = Bench.memory(pid)
  stats = Sidekiq::Stats.new
  raise "Sidekiq reports #{stats.failed} failed jobs" unless stats.failed.zero?

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
  redis { |r| saved_config.each { |key, value| r.config(:set, key, value) } } if fsync && saved_config
end
