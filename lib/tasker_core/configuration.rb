# frozen_string_literal: true

module TaskerCore
  # Options set in Ruby. Anything left nil falls through to the environment
  # (DATABASE_URL, TASKER_*), then to `file_settings` (config/tasker.yml,
  # which the Railtie reads), then to the core's defaults; the Rust core
  # validates the result and names every bad key and value.
  class Configuration
    PROVIDERS = %i[pgmq rabbitmq].freeze

    attr_accessor :database_url, :rabbitmq_url, :template_paths, :max_connections,
                  :visibility_timeout_seconds, :worker_poll_interval_ms,
                  :orchestration_poll_interval_ms, :queue_prefix, :priority_aging_ms
    attr_reader :messaging_provider, :file_settings, :around_step

    def initialize
      @template_paths = []
      @messaging_provider = nil # TASKER_MESSAGING_PROVIDER, else pgmq
      @file_settings = {}
      @around_step = nil
    end

    # The lowest layer above the defaults, shaped like the core's config
    # (string keys: "database_url", "messaging" => { "provider" }, ...);
    # see ConfigFile.load. Explicit options and the environment beat it.
    def file_settings=(settings)
      raise ConfigurationError, "file_settings must be a Hash, got #{settings.class}" unless settings.is_a?(Hash)

      @file_settings = settings
    end

    # A callable that runs each step's handler inside it, given the run as
    # a block: `->(&run) { Rails.application.reloader.wrap(&run) }` is what
    # the Railtie sets. nil runs handlers as they are.
    def around_step=(callable)
      unless callable.nil? || callable.respond_to?(:call)
        raise ConfigurationError, "around_step must respond to call, got #{callable.class}"
      end

      @around_step = callable
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
    # keys; nil values (and no template paths) are left out so lower layers
    # apply.
    def to_native
      paths = Array(template_paths).map(&:to_s)
      compact(
        "database_url" => database_url,
        "max_connections" => max_connections,
        "template_paths" => (paths unless paths.empty?),
        "messaging" => compact("provider" => messaging_provider&.to_s, "rabbitmq_url" => rabbitmq_url,
                               "visibility_timeout_seconds" => visibility_timeout_seconds,
                               "queue_prefix" => queue_prefix, "priority_aging_ms" => priority_aging_ms),
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
