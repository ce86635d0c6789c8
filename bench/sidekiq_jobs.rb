# frozen_string_literal: true

# The Sidekiq baseline's job, loaded by `sidekiq -r` and by the driver
# (bench/sidekiq_chain.rb): a chain of 4 noop jobs, each enqueueing the
# next; the last one pushes to the chain's done list.
require "sidekiq"

# Debian pairs Sidekiq 6.4 with redis-rb 4.8, which warns on every push
# (Sidekiq's SADD of the queue name); the warning is not Sidekiq's cost.
Redis.silence_deprecations = true

module Bench
  class ChainJob
    include Sidekiq::Worker
    sidekiq_options queue: "bench", retry: false

    def perform(done_key, position)
      if position < 4
        self.class.perform_async(done_key, position + 1)
      else
        Sidekiq.redis { |redis| redis.rpush(done_key, "1") }
      end
    end
  end
end

# No per-job log lines (Sidekiq logs each start and finish at INFO): the
# bench compares the engines, not logging.
Sidekiq.configure_server { |config| config.logger.level = Logger::WARN }
