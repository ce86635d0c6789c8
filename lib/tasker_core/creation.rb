# frozen_string_literal: true

module TaskerCore
  # The requests of TaskerCore.create_task and create_tasks: checked
  # (options and context in Ruby, then template, input_schema and
  # identity key in Rust) before anything is created, and turned into what
  # SqlFunctions.create_task(s) stores; then the created rows as Tasks.
  module Creation
    module_function

    # [request, timing]: the request Rust validates and the timing options
    # (TaskOptions), after the checks that need no database.
    def check(namespace, name, version, context, identity_key, traceparent, timing) # rubocop:disable Metrics/ParameterLists
      timing = TaskOptions.check!(timing)
      JsonValue.check!(context, "the context of a #{namespace}/#{name}@#{version} task")
      request = { "namespace" => namespace.to_s, "name" => name.to_s, "version" => version.to_s, "context" => context,
                  "identity_key" => (identity_key&.to_s unless identity_key == :derived),
                  "derive_identity_key" => identity_key == :derived, "traceparent" => traceparent&.to_s,
                  "timeout_seconds" => timing[:timeout_seconds], "priority" => timing[:priority] }
      [request, timing]
    end

    # create_tasks' requests (Hashes of create_task's keywords, symbol or
    # string keys), each checked as create_task checks one.
    def check_all(requests)
      unless requests.is_a?(Array)
        raise ArgumentError, "create_tasks takes an Array of Hashes (create_task's keywords), got #{requests.class}"
      end

      requests.each_with_index.map { |request, i| in_request(i) { check_keywords(request) } }
    end

    def check_keywords(request)
      raise ArgumentError, "expected a Hash of create_task's keywords, got #{request.class}" unless request.is_a?(Hash)

      keywords = request.transform_keys(&:to_sym)
      missing = %i[namespace name version] - keywords.keys
      raise ArgumentError, "missing keyword#{'s' if missing.size > 1}: #{missing.join(', ')}" unless missing.empty?

      fields = %i[namespace name version context identity_key traceparent]
      namespace, name, version, context, identity_key, traceparent = keywords.values_at(*fields)
      check(namespace, name, version, context || {}, identity_key, traceparent, keywords.except(*fields))
    end

    # An error raised for one request of create_tasks names it by its index.
    def in_request(index)
      yield
    rescue ArgumentError, Error => e
      raise e.class, "create_tasks request #{index}: #{e.message}", e.backtrace
    end

    # The keywords of SqlFunctions.create_task for a checked request: the
    # context as stored and the identity key (Rust validates both).
    def stored(request, timing)
      context, key = TaskerCore.client.validate_request(request)
      # In test mode a task starts when the test runs it: no run_at.
      timing = timing.slice(:timeout_seconds, :priority) if TaskerCore.test_mode
      { namespace: request["namespace"], name: request["name"], version: request["version"], context: context,
        identity_key: key, traceparent: request["traceparent"], **timing }
    end

    def stored_all(checked)
      checked.each_with_index.map { |(request, timing), i| in_request(i) { stored(request, timing) } }
    end

    # Whether the creating statement sends the first messages (PGMQ; in
    # test mode none is sent: the test runs the steps itself), and the
    # aging step the queues key them with (the engine's own connections
    # carry it; ActiveRecord's does not).
    def sending
      client = TaskerCore.client
      { send: TaskerCore.test_mode.nil? && client.queues_in_database?, priority_aging_ms: client.priority_aging_ms }
    end

    def created(row)
      TaskerCore.test_mode ? Testing.created(row.fetch("task_uuid")) : Models::Task.instantiate(row)
    end
  end
end
