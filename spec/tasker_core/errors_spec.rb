# frozen_string_literal: true

require "spec_helper"
require "tmpdir"

RSpec.describe "errors from the Rust core" do
  it "names every bad configuration value at once, as a ConfigurationError" do
    expect do
      TaskerCore::Native::Client.connect({}, { "database_url" => "mysql://u:secret@h/db", "max_connections" => 0 })
    end.to raise_error(TaskerCore::ConfigurationError) { |e|
      expect(e.message).to include('database_url must be a postgres:// URL, got "mysql://u:***@h/db"')
      expect(e.message).to include("max_connections must be at least 1")
      expect(e.message).not_to include("secret")
    }
  end

  it "never shows a password given as a URL parameter, in a connection error or the config dump" do
    url = "postgres://postgres@127.0.0.1:1/nowhere?password=hunter2&sslmode=disable"
    expect { TaskerCore::Native::Client.connect({}, { "database_url" => url }) }
      .to raise_error(TaskerCore::DatabaseError) { |e|
        expect(e.message).to start_with("cannot connect to PostgreSQL at " \
                                        "postgres://postgres@127.0.0.1:1/nowhere?password=***&sslmode=disable: ")
        expect(e.message).not_to include("hunter2")
      }
    # PGMQ, so that the RabbitMQ URL is only configured, never dialled.
    messaging = { "provider" => "pgmq", "rabbitmq_url" => "amqp://u:hunter2@h/%2f" }
    client = TaskerCore::Native::Client.connect({}, { "database_url" => "#{TEST_DATABASE_URL}?password=hunter2",
                                                      "messaging" => messaging })
    expect(client.config.to_s).not_to include("hunter2")
    expect([client.config["database_url"], client.config["messaging"]["rabbitmq_url"]])
      .to eq(["#{TEST_DATABASE_URL}?password=***", "amqp://u:***@h/%2f"])
  end

  it "refuses one template declared in two files, naming both" do
    Dir.mktmpdir do |dir|
      yaml = "namespace: twice\nname: flow\nversion: 1.0.0\nsteps:\n  - { name: a, handler: { callable: A } }\n"
      File.write(File.join(dir, "a.yaml"), yaml)
      File.write(File.join(dir, "b.yml"), yaml)
      client = TaskerCore::Native::Client.connect({}, { "database_url" => TEST_DATABASE_URL,
                                                        "template_paths" => [dir] })
      expect { client.register_templates }
        .to raise_error(TaskerCore::TemplateError, "template twice/flow@1.0.0 is declared twice: " \
                                                   "in #{dir}/a.yaml and in #{dir}/b.yml")
    end
  end

  it "names an unknown configuration key" do
    expect { TaskerCore::Native::Client.connect({}, { "worker" => { "concurency" => 2 } }) }
      .to raise_error(TaskerCore::ConfigurationError, /unknown field `concurency`/)
  end

  it "refuses a template with a cycle, naming the template and the steps" do
    Dir.mktmpdir do |dir|
      File.write(File.join(dir, "bad.yaml"), <<~YAML)
        namespace: broken
        name: cyclic
        version: 1.0.0
        steps:
          - { name: a, dependencies: [c], handler: { callable: A } }
          - { name: b, dependencies: [a], handler: { callable: B } }
          - { name: c, dependencies: [b], handler: { callable: C } }
          - { name: d, dependencies: [zzz], handler: { callable: D } }
      YAML
      client = TaskerCore::Native::Client.connect({}, { "database_url" => TEST_DATABASE_URL,
                                                        "template_paths" => [dir] })
      expect { client.register_templates }.to raise_error(TaskerCore::TemplateError) { |e|
        expect(e.message).to start_with("template broken/cyclic@1.0.0: ")
        expect(e.message).to include('step "d" depends on unknown step "zzz"')
      }
    end
  end

  it "raises NotFoundError for a template that is not registered" do
    expect { TaskerCore.create_task(namespace: "nowhere", name: "nothing", version: "1.0.0") }
      .to raise_error(TaskerCore::NotFoundError, %r{no task template nowhere/nothing@1.0.0 is registered})
  end

  it "raises ValidationError for a context that is not an object" do
    expect do
      TaskerCore.create_task(namespace: "examples", name: "linear_workflow", version: "1.0.0", context: [1, 2])
    end.to raise_error(TaskerCore::ValidationError,
                       %r{context of a examples/linear_workflow@1.0.0 task must be an object})
  end
end
