# frozen_string_literal: true

require "json"
require "logger"
require "timeout"
require "active_record"

require "tasker_core/version"
require "tasker_core/errors"
require "tasker_core/json_value"
require "tasker_core/failure"
require "tasker_core/decision"
require "tasker_core/native"
require "tasker_core/log_pump"
require "tasker_core/configuration"
require "tasker_core/config_file"
require "tasker_core/step_sequence"
require "tasker_core/step_handler/base"
require "tasker_core/step_handler/resolver"
require "tasker_core/message_service"
require "tasker_core/worker_threads"
require "tasker_core/sql_functions"
require "tasker_core/task_options"
require "tasker_core/creation"
require "tasker_core/worker"
require "tasker_core/runtime"
require "tasker_core/instrumentation"
require "tasker_core/launcher"
require "tasker_core/operations"
require "tasker_core/operator_reports"
require "tasker_core/template_check"

module TaskerCore
  # Autoloaded: defining them subclasses ActiveRecord::Base, and loading
  # that while a Rails app is still configuring itself would apply
  # ActiveRecord's settings before config/initializers run.
  module Models
    autoload :Base, "tasker_core/models/base"
    autoload :Task, "tasker_core/models/task"
    autoload :WorkflowStep, "tasker_core/models/workflow_step"
    autoload :WorkflowStepEdge, "tasker_core/models/workflow_step"
    autoload :NamedStep, "tasker_core/models/workflow_step"
    autoload :TaskTransition, "tasker_core/models/transitions"
    autoload :WorkflowStepTransition, "tasker_core/models/transitions"
  end
end

require "tasker_core/railtie" if defined?(Rails::Railtie)

# DAG workflow orchestration for Ruby and Rails, with a Rust core.
module TaskerCore
  class << self
    attr_writer :logger
    # nil (tasks run on workers), :inline or :fake: set by
    # TaskerCore::Testing (require "tasker_core/testing"), never in
    # production.
    attr_accessor :test_mode

    def configuration
      @configuration ||= Configuration.new
    end

    # Yields the configuration; the next call that needs the database
    # connects with it.
    def configure
      yield configuration
      @client_lock.synchronize { @client = nil }
      configuration
    end

    def logger
      @logger ||= Logger.new($stderr, level: Logger::INFO)
    end

    # The native client (connection pool, provider, templates), made on
    # first use.
    def client
      @client_lock.synchronize do
        LogPump.start
        @client ||= Native::Client.connect(configuration.file_settings, configuration.to_native).tap do |client|
          Models::Base.ensure_connection!(client.database_url, pool: client.config["max_connections"] + 5)
        end
      end
    end

    # Installs PGMQ, the schema and the SQL functions. Idempotent.
    def migrate!
      client.migrate
      true
    end

    # Loads, validates and stores every template below template_paths;
    # returns their keys ("namespace/name@version"). Idempotent.
    def register_templates!
      client.register_templates
    end

    # Starts an orchestrator and/or a worker in this process.
    #   TaskerCore.start(orchestrator: true, worker: { namespaces: %w[x], concurrency: 8 })
    def start(orchestrator: true, worker: nil)
      Runtime.new(orchestrator: orchestrator, worker: worker, client: client).start
    end

    # Creates a task and enqueues its first steps in one transaction;
    # returns the TaskerCore::Models::Task. Runs on ActiveRecord's
    # connection, so inside `ActiveRecord::Base.transaction` the task (and
    # its first messages, with PGMQ) exists only if that transaction
    # commits. identity_key: a key of yours, or :derived (a hash of the
    # template and context); creating again with it returns the first task.
    # run_at: (a Time) or delay: (seconds, or an ActiveSupport::Duration)
    # makes a delayed task: created at once, `pending` until then (it can be
    # cancelled meanwhile), started by an orchestrator when due.
    # timeout_seconds: the task's deadline from its start (else the
    # template's): a task still running past it ends in error, reason
    # "deadline".
    # priority: -5..5, higher runs first (else the template's, else 0):
    # under load, higher-priority steps of a namespace are taken first, and
    # a waiting step is passed by newer ones only for a bounded time
    # (messaging.priority_aging_ms per level of difference).
    # Under TaskerCore::Testing.inline the workflow runs to its end before
    # this returns (a delay is not waited for); under fake!, it waits for
    # Testing.run_all.
    # traceparent: the caller's W3C traceparent (e.g. from the request's
    # header): stored with the task, and every step's span continues that
    # trace when traces are exported (OTEL_EXPORTER_OTLP_ENDPOINT).
    # Raises UnavailableError at once while the database is known to be down.
    # (All keywords: the public API names every option.)
    def create_task(namespace:, name:, version:, context: {}, identity_key: nil, traceparent: nil, **timing) # rubocop:disable Metrics/ParameterLists
      request, timing = Creation.check(namespace, name, version, context, identity_key, traceparent, timing)
      # While the database is known to be down, UnavailableError at once.
      client.check_database_available
      Instrumentation.instrument("create_task", request.slice("namespace", "name", "version")) do |payload|
        task = Creation.stored(request, timing)
        row = unless_unreachable { SqlFunctions.create_task(**task, **Creation.sending) }
        payload[:task_uuid] = row.fetch("task_uuid")
        Creation.created(row)
      end
    end

    # Creates many tasks in one statement: one round trip and one commit
    # for all of them (a bulk import, a nightly fan-in of records), at about
    # half the database's cost per task of create_task. `requests`: an Array
    # of Hashes, each with create_task's keywords (namespace:, name:,
    # version:, context:, identity_key:, traceparent:, run_at:, delay:,
    # timeout_seconds:, priority:). Returns the Tasks in the order given; a
    # repeated identity_key returns the first task, as create_task does.
    # Every request is checked before anything is created, and the
    # creation is one statement: an error names the request by its index
    # and creates none of them. Inside your transaction, the tasks exist
    # only if it commits. Keep a call to a few hundred tasks: they become
    # visible to workers together, when the transaction commits.
    def create_tasks(requests)
      checked = Creation.check_all(requests)
      return [] if checked.empty?

      client.check_database_available
      Instrumentation.instrument("create_tasks", count: checked.size) do |payload|
        tasks = Creation.stored_all(checked)
        rows = unless_unreachable { SqlFunctions.create_tasks(tasks, **Creation.sending) }
        payload[:task_uuids] = rows.map { |row| row.fetch("task_uuid") }
        rows.map { |row| Creation.created(row) }
      end
    end

    # Cancels the task and its unfinished steps; nothing further runs.
    # Returns false when the task had already finished.
    def cancel_task(task, reason: "cancelled by operator")
      operate("cancel_task", task_uuid: uuid_of(task), reason: reason) { client.cancel_task(uuid_of(task), reason) }
    end

    # Gives a failed step a fresh set of attempts and resumes its task.
    def retry_step(step, reason: "retried by operator")
      operate("retry_step", step_uuid: uuid_of(step), reason: reason) { client.retry_step(uuid_of(step), reason) }
    end

    # Marks a step done by hand with `result`; its dependents then run.
    def resolve_step_manually(step, result, reason: "resolved by operator")
      JsonValue.check!(result, "the result given for step #{uuid_of(step)}")
      operate("resolve_step_manually", step_uuid: uuid_of(step), reason: reason) do
        client.resolve_step_manually(uuid_of(step), result, reason)
      end
    end

    def message_service
      MessageService.new(client)
    end

    # The queue a namespace's steps go to: "<queue_prefix><namespace>_queue".
    def queue_name(namespace)
      client.step_queue(namespace.to_s)
    end

    # The queue of task requests from callers outside Ruby and Rust:
    # "<queue_prefix>orchestration_task_requests".
    def task_requests_queue
      client.task_requests_queue
    end
  end

  class << self
    private

    def operate(event, payload)
      Instrumentation.instrument(event, payload) { |p| p[:applied] = yield }
    end

    def uuid_of(record)
      record.respond_to?(:id) ? record.id.to_s : record.to_s
    end

    # The errors of a database that cannot be reached (refused, gone away,
    # shutting down), as ActiveRecord raises them or as their cause.
    UNREACHABLE = %w[ActiveRecord::ConnectionNotEstablished PG::ConnectionBad PG::UnableToSend PG::AdminShutdown
                     PG::CrashShutdown PG::CannotConnectNow].freeze
    private_constant :UNREACHABLE

    # Runs the block on ActiveRecord's connection; an error saying the
    # database cannot be reached opens the database's circuit breaker (later
    # calls fail at once until it answers again) and is raised as an
    # UnavailableError.
    def unless_unreachable
      yield
    rescue StandardError => e
      raise unless [e, e.cause].compact.any? { |err| err.class.ancestors.any? { |a| UNREACHABLE.include?(a.name) } }

      client.database_unreachable("#{e.class}: #{e.message}")
      raise UnavailableError, "the database is unreachable: #{e.message.lines.first.to_s.strip}"
    end
  end

  @client_lock = Mutex.new
end
