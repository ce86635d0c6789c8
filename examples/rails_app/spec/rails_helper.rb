# frozen_string_literal: true

# Boots the shop app in the test environment against the real PostgreSQL
# (tasker_rails_test, or DATABASE_URL), migrates it (the app's tables and,
# through the install migration, tasker_core's schema) and registers the
# templates.
#
# Workflows run inline (TaskerCore::Testing): create_task runs the
# workflow in this thread, on this connection, through the engine's SQL
# functions, so every example runs in a transaction rolled back after it
# (transactional fixtures). Examples tagged `tasker: :real` run the engine
# itself (a runtime in this process, or rake processes), whose own
# connections cannot see an uncommitted transaction: those groups turn
# transactional tests off.
ENV["RAILS_ENV"] ||= "test"
require "securerandom"
# A queue prefix of this run's own (the processes the specs start inherit
# it): no other run sharing the database or broker reads its queues.
ENV["TASKER_QUEUE_PREFIX"] ||= "r#{SecureRandom.hex(4)}_"
require_relative "../config/environment"
require "rspec/rails"
require "tasker_core/testing"

APP_ROOT = Rails.root.to_s

begin
  ActiveRecord::Migration.verbose = false
  ActiveRecord::Base.connection.migration_context.migrate
  # The install migration runs once per database; as after a deploy of a
  # newer gem (`rake tasker:migrate`), the engine's schema and SQL functions
  # are brought up to this checkout's (idempotent: nothing to do when they
  # already are).
  TaskerCore.migrate!
  TaskerCore.register_templates!
rescue ActiveRecord::NoDatabaseError, ActiveRecord::ConnectionNotEstablished, TaskerCore::DatabaseError => e
  abort "#{e.class}: #{e.message}\nThe Rails example's specs need PostgreSQL on 127.0.0.1:5432 with a " \
        "tasker_rails_test database: run `bin/setup tasker_rails_test` from the repository root (it starts " \
        "PostgreSQL and creates the database), or `pg_ctlcluster 15 main start && createdb -h 127.0.0.1 " \
        "-U postgres tasker_rails_test`."
end
TaskerCore.logger.level = Logger::WARN

Dir[File.join(__dir__, "support/**/*.rb")].sort.each { |f| require f }

TaskerCore::Testing.inline!

RSpec.configure do |config|
  config.use_transactional_fixtures = true
  config.include ShopHelpers
  config.include ProcessHelpers
  config.extend ShopHelpers::ClassMethods
  config.disable_monkey_patching!
  config.order = :random
  config.expect_with(:rspec) { |c| c.syntax = :expect }
end
