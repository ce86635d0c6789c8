# frozen_string_literal: true

require "erb"
require "yaml"

module TaskerCore
  # Reads a config/tasker.yml: ERB, then YAML, keyed by environment, with
  # the same keys as the core's configuration:
  #
  #   test:
  #     database_url: <%= ENV["TASKER_DATABASE_URL"] %>
  #     template_paths: [config/tasker/templates]
  #     messaging: { provider: pgmq, visibility_timeout_seconds: 30 }
  #     worker: { namespaces: [fulfillment], concurrency: 4, poll_interval_ms: 200 }
  #     orchestration: { poll_interval_ms: 200, sweep_interval_ms: 1000 }
  #
  # The result is a Configuration#file_settings layer. The core rejects
  # unknown keys and bad values, naming each one.
  module ConfigFile
    module_function

    # The settings for `env` (an empty Hash when the file or the
    # environment's section is missing). Relative template paths are taken
    # from `root`; blank values are dropped so lower layers apply.
    def load(path, env:, root: Dir.pwd)
      return {} unless File.exist?(path)

      document = parse(path)
      section = document.fetch(env.to_s, nil) || {}
      unless section.is_a?(Hash)
        raise ConfigurationError, "#{path}: the #{env} section must be a mapping, got #{section.class}"
      end

      settings = prune(section)
      settings["template_paths"] = Array(settings["template_paths"]).map { |p| File.expand_path(p.to_s, root) }
      settings.delete("template_paths") if settings["template_paths"].empty?
      settings
    end

    def parse(path)
      document = YAML.safe_load(ERB.new(File.read(path)).result, aliases: true) || {}
      raise ConfigurationError, "#{path} must hold a mapping of environments" unless document.is_a?(Hash)

      document
    rescue Psych::SyntaxError => e
      raise ConfigurationError, "#{path} is not valid YAML: #{e.message}"
    end

    # Removes nil and "" values (an unset ERB variable), and sections left
    # empty, recursively, so they do not override a lower layer.
    def prune(hash)
      hash.each_with_object({}) do |(key, value), out|
        value = prune(value) if value.is_a?(Hash)
        next if value.nil? || value == "" || value == {}

        out[key.to_s] = value
      end
    end
  end
end
