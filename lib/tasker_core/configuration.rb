# frozen_string_literal: true

module TaskerCore
  # Options set in Ruby. Anything left nil falls through to the environment
  # (DATABASE_URL, TASKER_*), then to the core's defaults; the Rust core
  # validates the result and names every bad key and value.
  class Configuration
    PROVIDERS = %i[pgmq rabbitmq].freeze

    attr_accessor :database_url, :rabbitmq_url, :template_paths, :max_connections,
                  :visibility_timeout_seconds, :worker_poll_interval_ms,
                  :orchestration_poll_interval_ms
    attr_reader :messaging_provider

    def initialize
      @template_paths = []
      @messaging_provider = nil # TASKER_MESSAGING_PROVIDER, else pgmq
    end

    def messaging_provider=(provider)
      provider = provider.to_sym
      unless PROVIDERS.include?(provider)
        raise ConfigurationError,
              "messaging_provider must be one of #{PROVIDERS.join(', ')}, got #{provider.inspect}"
      end
      @messaging_provider = provider
    end

    # The explicit layer of the core's configuration, as a Hash with string
    # keys; nil values are left out so lower layers apply.
    def to_native
      compact(
        "database_url" => database_url,
        "max_connections" => max_connections,
        "template_paths" => Array(template_paths).map(&:to_s),
        "messaging" => compact("provider" => messaging_provider&.to_s, "rabbitmq_url" => rabbitmq_url,
                               "visibility_timeout_seconds" => visibility_timeout_seconds),
        "orchestration" => compact("poll_interval_ms" => orchestration_poll_interval_ms),
        "worker" => compact("poll_interval_ms" => worker_poll_interval_ms)
      )
    end

    private

    def compact(hash)
      hash.reject { |_, v| v.nil? || v == {} }
    end
  end
end
