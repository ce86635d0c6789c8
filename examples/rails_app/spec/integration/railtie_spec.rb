# frozen_string_literal: true

require "stringio"

# What the Railtie wires up, seen from inside the booted test app.
RSpec.describe TaskerCore::Railtie do
  it "reads config/tasker.yml for Rails.env, with template_paths and the database defaulted from the app" do
    config = TaskerCore.client.config

    expect(config["worker"]).to eq("namespaces" => ["fulfillment"], "concurrency" => 3, "poll_interval_ms" => 100)
    expect(config["orchestration"]).to include("poll_interval_ms" => 100, "sweep_interval_ms" => 500)
    expect(config["messaging"]).to include("provider" => "pgmq", "visibility_timeout_seconds" => 30)
    expect(config["template_paths"]).to eq([File.join(APP_ROOT, "config/tasker/templates")])
    expect(config["database_url"]).to end_with("/#{ActiveRecord::Base.connection.current_database}")
  end

  it "reads each environment's own section" do
    settings = described_class.file_settings(Rails.application, env: "development")
    production = described_class.file_settings(Rails.application, env: "production")

    expect(settings["worker"]).to eq("namespaces" => ["fulfillment"], "concurrency" => 4, "poll_interval_ms" => 200)
    expect(production["worker"]["concurrency"]).to eq(8)
    expect(settings["orchestration"]).to eq("poll_interval_ms" => 200, "sweep_interval_ms" => 1000)
  end

  it "builds the default database URL from database.yml when there is no DATABASE_URL" do
    saved = ENV.delete("DATABASE_URL")
    settings = described_class.file_settings(Rails.application, env: "production")

    expect(settings["database_url"]).to eq("postgres://postgres@127.0.0.1:5432/tasker_rails_production")
  ensure
    ENV["DATABASE_URL"] = saved if saved
  end

  it "runs each step inside the app's reloader (an executor unit of work), returning the step's result" do
    inside = TaskerCore.configuration.around_step.call { [Rails.application.executor.active?, :result] }

    expect(Rails.application.executor.active?).to be(false)
    expect(inside).to eq([true, :result])
  end

  it "writes the Rust core's log events to Rails.logger" do
    expect(TaskerCore.logger).to be(Rails.logger)
    io = StringIO.new
    saved = TaskerCore.logger
    TaskerCore.logger = ActiveSupport::Logger.new(io)
    namespace = "poison_#{SecureRandom.hex(4)}"
    bad = TaskerCore.queue_name(namespace)
    TaskerCore.message_service.create_queue(bad)
    worker = TaskerCore::Native::Worker.start(TaskerCore.client, [namespace], 1)
    TaskerCore.message_service.send_message(bad, { "not" => "a step" })
    deadline = Time.now + 10
    until io.string.include?("poison message") || Time.now > deadline
      TaskerCore::LogPump.flush
      sleep 0.05
    end
    worker.shutdown(5.0)
    expect(io.string)
      .to match(/\[tasker_core::messaging\] poison message moved to the dead-letter store queue=#{bad} receipt=\d+/)
  ensure
    TaskerCore.logger = saved
    TaskerCore.message_service.delete_queue(bad) if bad
  end

  it "leaves tasker_core's tables out of schema.rb (TaskerCore.migrate! owns them)" do
    schema = StringIO.new
    ActiveRecord::SchemaDumper.dump(ActiveRecord::Base.connection, schema)

    expect(schema.string).to include('create_table "orders"', 'create_table "order_events"')
    expect(schema.string).not_to include("tasker_", "_sqlx_migrations")
  end

  it "lists the tasker tasks in the app's rake -T" do
    output, status = run_command({}, "rake", "-T", "tasker")

    expect(status).to be_success
    expect(output).to include("rake tasker:worker", "rake tasker:orchestrator", "rake tasker:install",
                              "rake tasker:migrate", "rake tasker:status")
  end
end
