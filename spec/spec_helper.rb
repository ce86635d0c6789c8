# frozen_string_literal: true

# Specs run against the real PostgreSQL (bin/test prepares it). Examples
# do not run inside transactions: the engine commits from its own
# connections and wakes on LISTEN/NOTIFY, which a wrapping transaction
# would hide. Each spec instead uses its own queues and tasks.
#
# Each run is a deployment of its own: a fresh queue prefix (inherited by
# the worker and orchestrator processes the specs start), so no other run
# sharing the database or broker reads this run's queues or serves its task
# requests.
require "securerandom"
ENV["TASKER_QUEUE_PREFIX"] ||= "s#{SecureRandom.hex(4)}_"
require "tasker_core"
require_relative "../examples/handlers/squares"
require_relative "../examples/handlers/add_one"
require_relative "fixtures/handlers/probe_handlers"
require_relative "fixtures/handlers/misbehave_handlers"

ROOT = File.expand_path("..", __dir__)
TEST_DATABASE_URL = ENV.fetch("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tasker_test")
require_relative "support/processes"

TaskerCore.configure do |c|
  c.database_url = TEST_DATABASE_URL
  c.template_paths = [File.join(ROOT, "examples/templates"), File.join(ROOT, "spec/fixtures/templates")]
  c.worker_poll_interval_ms = 100
  c.orchestration_poll_interval_ms = 100
end
TaskerCore.logger.level = Logger::WARN
# bin/test runs the suite once per provider (TASKER_MESSAGING_PROVIDER).
SPEC_PROVIDER = TaskerCore.client.config["messaging"]["provider"].to_sym

begin
  TaskerCore.migrate!
  TaskerCore.register_templates!
  ActiveRecord::Base.connection.execute(<<~SQL)
    CREATE TABLE IF NOT EXISTS fleet_step_runs (
      id bigserial PRIMARY KEY, step_uuid uuid NOT NULL, task_uuid uuid NOT NULL, pid integer NOT NULL,
      created_at timestamptz NOT NULL DEFAULT clock_timestamp())
  SQL
rescue TaskerCore::DatabaseError, TaskerCore::MessagingError => e
  abort "#{e.message}\nThe specs need PostgreSQL with a tasker_test database (and RabbitMQ for the rabbitmq " \
        "run): run bin/test (it starts and prepares everything), or `pg_ctlcluster 15 main start && " \
        "createdb -h 127.0.0.1 -U postgres tasker_test` and `rabbitmq-server -detached`."
end

# Runs an orchestrator and a worker in this process around each example
# of a group: `run_tasker_around_each(namespaces: %w[x])`.
module RuntimeGroup
  def run_tasker_around_each(namespaces:, concurrency: 4)
    around do |example|
      runtime = TaskerCore.start(orchestrator: true, worker: { namespaces: namespaces, concurrency: concurrency })
      example.run
    ensure
      runtime&.stop(timeout: 10)
    end
  end
end

module SpecHelpers
  def unique_name(prefix)
    "#{prefix}_#{SecureRandom.hex(5)}"
  end

  # Registers a one-step template in the `timing` namespace (a worker
  # serving it runs Probe::Nap) with the given `schedules:` YAML.
  def register_timing_template(name, version, schedules)
    TaskerCore.client.register_template_yaml(<<~YAML, "#{name}.yaml")
      namespace: timing
      name: #{name}
      version: #{version}
      #{schedules}
      steps:
        - { name: tick, handler: { callable: Probe::Nap } }
    YAML
  end

  def history(records)
    records.map { |t| [t.from_state, t.to_state] }
  end
end

RSpec.configure do |config|
  config.include SpecHelpers
  config.include ProcessHelpers
  config.extend RuntimeGroup
  config.disable_monkey_patching!
  config.order = :random
  config.expect_with(:rspec) { |c| c.syntax = :expect }
end
