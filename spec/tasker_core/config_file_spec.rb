# frozen_string_literal: true

require "spec_helper"
require "tmpdir"

RSpec.describe TaskerCore::ConfigFile do
  around do |example|
    Dir.mktmpdir("tasker_config") do |dir|
      @dir = dir
      example.run
    end
  end

  def write(yaml)
    File.join(@dir, "tasker.yml").tap { |path| File.write(path, yaml) }
  end

  it "reads the environment's section after ERB, with template paths taken from the root" do
    path = write(<<~YAML)
      default: &default
        messaging: { provider: pgmq, visibility_timeout_seconds: <%= 20 + 10 %> }
      test:
        <<: *default
        template_paths: [config/tasker/templates, /abs/templates]
        worker: { namespaces: [billing], concurrency: 2 }
      development:
        worker: { concurrency: 9 }
    YAML

    expect(described_class.load(path, env: "test", root: "/app"))
      .to eq("messaging" => { "provider" => "pgmq", "visibility_timeout_seconds" => 30 },
             "template_paths" => ["/app/config/tasker/templates", "/abs/templates"],
             "worker" => { "namespaces" => ["billing"], "concurrency" => 2 })
    expect(described_class.load(path, env: :development, root: "/app")).to eq("worker" => { "concurrency" => 9 })
  end

  it "drops values an unset ERB variable left blank, so lower layers apply" do
    path = write(<<~YAML)
      production:
        database_url: <%= ENV["TASKER_SPEC_UNSET_VARIABLE"] %>
        messaging: { rabbitmq_url: "" }
        max_connections: 4
    YAML

    expect(described_class.load(path, env: "production")).to eq("max_connections" => 4)
  end

  it "gives nothing for a missing file or environment" do
    expect(described_class.load(File.join(@dir, "missing.yml"), env: "test")).to eq({})
    expect(described_class.load(write("development: { max_connections: 3 }\n"), env: "test")).to eq({})
  end

  it "names the file and the problem when the YAML is not a mapping of environments" do
    expect { described_class.load(write("test: [a, b]\n"), env: "test") }
      .to raise_error(TaskerCore::ConfigurationError, /tasker\.yml: the test section must be a mapping, got Array/)
    expect { described_class.load(write("test: {\n"), env: "test") }
      .to raise_error(TaskerCore::ConfigurationError, /tasker\.yml is not valid YAML/)
    expect { described_class.load(write("- a\n"), env: "test") }
      .to raise_error(TaskerCore::ConfigurationError, /must hold a mapping of environments/)
  end

  it "is the file layer: the environment and explicit options beat it, and the core rejects unknown keys" do
    config = TaskerCore::Configuration.new
    config.file_settings = { "database_url" => TEST_DATABASE_URL,
                             "worker" => { "concurrency" => 2, "poll_interval_ms" => 300 } }
    config.worker_poll_interval_ms = 50
    client = TaskerCore::Native::Client.connect(config.file_settings, config.to_native)

    expect(client.config["worker"]).to include("concurrency" => 2, "poll_interval_ms" => 50)
    expect { TaskerCore::Native::Client.connect({ "wokrer" => {} }, {}) }
      .to raise_error(TaskerCore::ConfigurationError, /wokrer/)
  end
end
