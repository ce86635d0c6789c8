# frozen_string_literal: true

require_relative "stop_process"

# Starts and stops whole tasker processes for the multi-process specs.
module ProcessHelpers
  include StopProcess

  ORCHESTRATOR_BIN = File.join(ROOT, "target/release/tasker-orchestrator")

  def spawn_worker(namespaces:, concurrency: 4, env: {})
    read, write = IO.pipe
    pid = Process.spawn({ "DATABASE_URL" => TEST_DATABASE_URL, "NAMESPACES" => namespaces.join(","),
                          "CONCURRENCY" => concurrency.to_s }.merge(env),
                        RbConfig.ruby, "-I", File.join(ROOT, "lib"), File.join(ROOT, "spec/support/tasker_process.rb"),
                        out: write, err: $stderr)
    write.close
    line = read.gets
    raise "worker process #{pid} did not start" unless line&.start_with?("ready")

    read.close
    pid
  end

  def spawn_orchestrator(env: {})
    unless File.executable?(ORCHESTRATOR_BIN)
      raise "#{ORCHESTRATOR_BIN} is not built: run bin/test (or cargo build --release --workspace)"
    end

    Process.spawn({ "DATABASE_URL" => TEST_DATABASE_URL, "TASKER_LOG" => "warn" }.merge(env), ORCHESTRATOR_BIN,
                  out: File::NULL, err: $stderr)
  end
end
