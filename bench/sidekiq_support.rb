# frozen_string_literal: true

# The Sidekiq baseline's process and its two measurements, shared by
# bench/sidekiq_chain.rb and bench/idle_pair.rb: Sidekiq (Debian's
# ruby-sidekiq) with local Redis, one process, running chains of 4 noop
# jobs (each enqueues the next; see sidekiq_jobs.rb).
require_relative "support"

ENV["REDIS_URL"] ||= "redis://127.0.0.1:6379/15"
require_relative "sidekiq_jobs"
require "sidekiq/api"

module Bench
  module SidekiqChains
    module_function

    def redis(&block)
      Sidekiq.redis(&block)
    end

    # Starts `sidekiq` on the bench queue; its log goes to OUT/<log>.log.
    def spawn(log, concurrency:)
      out = File.join(OUT, "#{log}.log")
      Process.spawn({ "REDIS_URL" => ENV.fetch("REDIS_URL") }, "sidekiq", "-r", File.join(__dir__, "sidekiq_jobs.rb"),
                    "-c", concurrency.to_s, "-q", "bench", "-e", "production", out: out, err: %i[child out])
    end

    # `count` chains pushed at once (their first jobs `bulk` at a time with
    # push_bulk), timed until the last is done; returns the seconds.
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

    def push_chains(count, key, bulk)
      return count.times { Bench::ChainJob.perform_async(key, 1) } unless bulk

      count.times.each_slice(bulk) do |slice|
        Sidekiq::Client.push_bulk("class" => Bench::ChainJob, "args" => slice.map { [key, 1] })
      end
    end

    # One chain alone, from perform_async until a BLPOP sees its last job's
    # push; returns the milliseconds.
    def idle_chain_ms(key)
      t0 = Bench.monotonic
      Bench::ChainJob.perform_async(key, 1)
      raise "chain #{key} not done within 10 s" unless redis { |r| r.blpop(key, timeout: 10) }

      (Bench.monotonic - t0) * 1000
    end

    # Raises unless Sidekiq counted no failed job.
    def check_no_failures!
      stats = Sidekiq::Stats.new
      raise "Sidekiq reports #{stats.failed} failed jobs" unless stats.failed.zero?

      stats
    end
  end
end
